"""End to end on a tiny config: simulate, train one short epoch, resume, export (fp32, INT8,
pruned), and load the exported artifact through the registry and runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "frame_smoke.toml"


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("frame_smoke")
    text = SMOKE.read_text().replace('cache_dir = "runs/cache/frame_smoke"',
                                     f'cache_dir = "{tmp / "cache"}"')
    path = tmp / "frame_smoke.toml"
    path.write_text(text)
    return path


def test_train_resume_export_load(config, tmp_path):
    pytest.importorskip("torch")
    from sonoflow.models import registry, runtime
    from sonoflow.training.tasks import frame

    run = tmp_path / "run"
    summary = frame.run(config, run, progress=False)
    assert (run / "best.pt").exists() and (run / "config.toml").read_text() == config.read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and np.isfinite(rows[-1]["train_loss"])
    held = json.loads((run / "heldout.json").read_text())
    assert held["good_frames"]["n_frames"] > 0 and summary["epochs"] == 1
    # resuming a finished run trains no further epoch and keeps the history
    frame.run(config, run, resume=True, progress=False)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(rows)

    out = tmp_path / "weights"
    report = frame.export_run(run, config, out, prune=True, int8=True, progress=False)
    assert set(report["artifacts"]) == {"frame-smoke-fp32", "frame-smoke-int8",
                                        "frame-smoke-pruned-fp32", "frame-smoke-pruned-int8"}
    pruned = report["artifacts"]["frame-smoke-pruned-fp32"]
    assert pruned["params"] < report["artifacts"]["frame-smoke-fp32"]["params"]
    _, pcard = registry.resolve("frame-smoke-pruned", "fp32", [out])
    assert pcard.id == "frame-smoke-pruned" and pcard.pruning_ratio == 0.25
    path, card = registry.resolve("frame-smoke", "int8", [out])
    assert card.precision == "int8" and card.extra["quantization"]["format"] == "QDQ"
    assert "ap50" in card.metrics and card.training["config_hash"]
    with runtime.load(path, "ort-cpu", "int8") as rt:
        outs = rt.run({"image": np.zeros((1, 1, 256, 256), np.float32)})
    assert outs["heatmap"].shape == (1, 1, 64, 64)
