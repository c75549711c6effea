"""Replay of the real recordings in ../shared/data/real through a ZeroMQ pipeline: every frame
back, in order, none lost, counted against the manifests; the overlay video readable by ffprobe;
a second replay identical apart from timing fields; bad inputs through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sonoflow.stream.replay import replay_source

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent")
pytestmark = pytest.mark.integration


def _manifest(folder: str, name: str) -> dict:
    p = REAL / folder / name
    return json.loads(p.read_text()) if p.is_file() else {}


def _real_cases() -> list[tuple[str, int]]:
    cases = []
    for name, info in _manifest("cine", "manifest.json").items():
        cases.append((f"cine/{name}", info["frames_decoded"]))
    for name, info in _manifest("dicom", "manifest.json").items():
        cases.append((f"dicom/{name}", info["frames"]))
    for name, info in _manifest("plus", "frames_manifest.json").items():
        cases.append((f"plus/{name}", len(info["frames"])))
    return cases or [("absent", 0)]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _without_timing(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "latency_ms"} for r in recs]


@needs_real
@pytest.mark.parametrize("rel, expected", _real_cases(), ids=lambda x: str(x))
def test_every_real_recording_replays_with_its_manifest_frame_count(tmp_path, rel, expected):
    res = replay_source(str(REAL / rel), tmp_path, pipeline="relay", progress=False)
    assert res.ok, res.error
    recs = _records(tmp_path)
    assert len(recs) == expected
    assert [r["seq"] for r in recs] == list(range(expected))
    assert [r["frame_index"] for r in recs] == list(range(expected)), "in source order"
    assert all(r["status"] == "analysed" for r in recs), "none lost or failed"
    assert res.counts == {"total": expected, "analysed": expected, "rejected": 0,
                          "dropped": 0, "failed": 0}


@needs_real
@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) absent")
def test_overlay_video_is_readable_by_ffprobe_with_the_frames_we_claim(tmp_path):
    res = replay_source(str(REAL / "cine" / "ruq-simple.mp4"), tmp_path, pipeline="relay",
                        progress=False)
    assert res.ok
    lat = json.loads((tmp_path / "latency.json").read_text())
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames,codec_name,width,height",
                          "-of", "json", str(tmp_path / "overlay.mp4")],
                         capture_output=True, text=True, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    assert int(stream["nb_read_frames"]) == lat["overlay_frames"] == 201
    assert (stream["width"], stream["height"]) == (800, 450)


@needs_real
def test_replaying_twice_gives_identical_frames_apart_from_timing(tmp_path):
    src = str(REAL / "cine" / "ruq-simple.mp4")
    a = replay_source(src, tmp_path / "a", pipeline="relay", progress=False)
    b = replay_source(src, tmp_path / "b", pipeline="relay", progress=False, mode="processes")
    assert a.ok and b.ok
    assert _without_timing(_records(tmp_path / "a")) == _without_timing(_records(tmp_path / "b"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sonoflow.stream.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_unknown_source_fails_clearly(tmp_path):
    r = _cli("replay", "nope:xyz", "--out", str(tmp_path), "--pipeline", "relay",
             "--no-progress")
    assert r.returncode != 0
    assert "nope:xyz" in r.stderr and "Accepted" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_truncated_video_keeps_the_frames_before_the_fault(tmp_path):
    import av
    import numpy as np

    clip = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(60):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = _cli("replay", str(cut), "--out", str(tmp_path / "o"), "--pipeline", "relay",
             "--no-progress")
    assert "Traceback" not in r.stderr
    if r.returncode != 0:
        assert "cut.mp4" in r.stderr
    recs = _records(tmp_path / "o" / "cut")
    assert len(recs) > 0, "frames decoded before the fault are written"
    assert sum(1 for x in recs if x["status"] == "analysed") > 0


def test_cli_missing_file_fails_clearly(tmp_path):
    r = _cli("replay", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o"),
             "--pipeline", "relay", "--no-progress")
    assert r.returncode != 0
    assert "missing.mp4" in r.stderr and "Traceback" not in r.stderr
