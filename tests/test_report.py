"""case.json and report.html: contents, self-containment, errors, and a Chromium render."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from sonoflow.stream.errors import StageError
from sonoflow.stream.messages import EosHeader, Packet, header_to_builtins
from sonoflow.stream.sinks.report import read_frames_jsonl, write_case_outputs


def _fixtures():
    path = Path(__file__).with_name("aggregate_fixtures.py")
    spec = importlib.util.spec_from_file_location("aggregate_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("aggregate_fixtures", mod)
    spec.loader.exec_module(mod)
    return mod


fx = _fixtures()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    frames, _, case = fx.run_stages(fx.disc_clip(n_frames=45, bad_frames=(10, 11)),
                                    aggregate_config={"lirads_min_good_frames": 10})
    jsonl = out / "frames.jsonl"
    with jsonl.open("w") as fh:
        for p in frames:
            h = p.header
            rec = {"seq": h.seq, "frame_index": h.frame_index, "status": h.status,
                   "quality": {"score": h.quality.score, "flags": h.quality.flags},
                   "detections": [header_to_builtins(d) for d in
                                  (h.infer.detections if h.infer else [])]}
            fh.write(json.dumps(rec) + "\n")
        # a frame lost in transit, as the sink writes it
        fh.write(json.dumps({"seq": 45, "frame_index": None, "status": "dropped",
                             "quality": None, "detections": []}) + "\n")
    paths = write_case_outputs(out, case, jsonl)
    return out, paths, case


def test_writes_case_json_exactly(outputs):
    out, paths, case = outputs
    assert paths == [out / "case.json", out / "report.html"]
    assert json.loads((out / "case.json").read_text()) == case.header.case


def test_report_is_self_contained_and_complete(outputs):
    out, _, case = outputs
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) == len(case.header.case["lesions"]) + 1  # thumbnails + timeline
    assert "not a diagnosis" in page
    assert "US LI-RADS v2017" in page and case.header.case["lirads"]["category"] in page
    assert page.count("estimated") >= 2
    for les in case.header.case["lesions"]:
        assert f"{les['long_axis_mm']:.1f} &times; {les['short_axis_mm']:.1f} mm" in page
    assert "sonoflow" in page
    agg = case.header.case["aggregation"]
    assert f"at least\n{agg['min_track_frames']} frames of evidence" in page
    assert "test-time augmentation" in page


def test_report_lists_possible_mimics_apart_from_lesions(tmp_path, outputs):
    _, _, case = fx.run_stages(fx.disc_clip(lesions=(("cyst", 20.0), ("other", 16.0))))
    c = case.header.case
    assert len(c["lesions"]) == 1 and len(c["mimics"]) == 1
    write_case_outputs(tmp_path, case, None)
    page = (tmp_path / "report.html").read_text()
    lesions_part, mimics_part = page.split("Possible mimics (not counted as lesions)")
    m = c["mimics"][0]
    assert f"{m['long_axis_mm']:.1f} &times; {m['short_axis_mm']:.1f} mm" in mimics_part
    assert f"{m['long_axis_mm']:.1f} &times;" not in lesions_part
    assert "left out (possible mimic)" in mimics_part
    assert "tracks pooled to other listed as possible mimics" in mimics_part  # the footer
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2  # both key frames
    # a study without mimics has no such section
    assert "Possible mimics" not in (outputs[0] / "report.html").read_text()


def test_report_without_timeline_and_html_escaping(tmp_path):
    _, _, case = fx.run_stages(fx.disc_clip(n_frames=12))
    case.header.case["source"] = "<script>alert(1)</script>.mp4"
    write_case_outputs(tmp_path, case, None)
    page = (tmp_path / "report.html").read_text()
    assert "timeline not available" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_errors_name_the_problem(tmp_path):
    eos = Packet(EosHeader(stream_id="s", last_seq=0, frames_total=1))
    with pytest.raises(StageError, match="case"):
        write_case_outputs(tmp_path, eos, None)
    bad = tmp_path / "frames.jsonl"
    bad.write_text('{"seq": 0}\nnot json\n')
    with pytest.raises(StageError, match=r"frames.jsonl:2"):
        read_frames_jsonl(bad)
    with pytest.raises(StageError, match="cannot read"):
        read_frames_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.slow
@pytest.mark.integration
def test_chromium_renders_the_report(outputs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium not installed (Debian package `chromium`)")
    out, _, _ = outputs
    png = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={png}", "--window-size=1200,1600",
                    (out / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert img.std() > 20  # a page with content, not a blank screen
