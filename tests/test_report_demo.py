"""`sonoflow demo`: the printed summary, and (slow, needs models + simulator) the full run."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sonoflow.stream.commands.demo import sim_spec, summary_text


def test_sim_spec_is_a_full_sim_source():
    assert sim_spec(7, 90) == "sim:seed=7,frames=90,fps=30,width=640,height=480,ui=1,events=1"


def test_summary_lists_lesions_truth_lirads_grades_and_files(tmp_path):
    (tmp_path / "report.html").write_text("x")
    (tmp_path / "case.json").write_text("{}")
    case = {
        "frames": {"total": 100, "analysed": 90, "rejected": 8, "dropped": 2, "failed": 0},
        "lesions": [{"lesion_id": 3, "class": "hcc", "class_probs": {"hcc": 0.81},
                     "long_axis_mm": 21.04, "short_axis_mm": 17.5, "malignancy": 0.77,
                     "first_frame": 4, "last_frame": 80}],
        "lirads": {"version": "v2017", "category": "US-3", "visualization": "A",
                   "recommendation": "multiphase CT or MRI"},
        "steatosis": {"grade": "S2"}, "fibrosis": {"stage": None},
        "malignancy_risk": {"value": 0.77},
        "synthetic_statement": "trained on synthetic data; not a diagnosis",
    }
    truth = [{"class": "hcc", "diameter_mm": 22.0, "malignant": True}]
    text = summary_text(case, truth, 12.3, SimpleNamespace(out_dir=tmp_path))
    assert "analysed 90 of 100 frames" in text
    assert "hcc" in text and "21.0 x 17.5 mm" in text and "malignancy 77%" in text
    assert "22.0 mm (malignant)" in text
    assert "US-3" in text and "visualization A" in text
    assert "Steatosis S2 (estimated)" in text and "fibrosis n/a" in text
    assert "not a diagnosis" in text
    assert str(tmp_path / "report.html") in text and "overlay.mp4" not in text


@pytest.mark.slow
@pytest.mark.integration
def test_demo_end_to_end(tmp_path):
    from sonoflow.models.registry import available

    if not available():
        pytest.skip("no shipped models in models/weights (build them with tools/build_models.sh)")
    pytest.importorskip("sonoflow.stream.sources.sim", reason="sim source not built yet")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "sonoflow.stream.cli", "demo", "--out",
                           str(out), "--frames", "45", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    case = json.loads((out / "case.json").read_text())
    assert case["schema"] == "sonoflow.case/1" and case["frames"]["total"] == 45
    assert case["synthetic_models"] is True
    assert (out / "report.html").exists() and (out / "overlay.mp4").exists()
    assert "US LI-RADS v2017" in proc.stdout and str(out / "report.html") in proc.stdout
