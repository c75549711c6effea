"""`sonoflow live` from the command line: the run summary and the inline capture."""

from __future__ import annotations

import json

import pytest

from sonoflow.stream.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("inline", [False, True])
def test_live_records_every_frame_and_names_what_each_stage_processed(tmp_path, capsys, inline):
    out = tmp_path / "rec"
    args = ["live", "pattern:frames=45,fps=60,width=96,height=64", "--pipeline", "relay",
            "--view", "none", "--record", str(out)] + (["--inline-capture"] if inline else [])
    assert main(args) == 0
    recs = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in recs] == list(range(45)), "every frame accounted for, in order"
    assert all(r["status"] in ("analysed", "dropped") for r in recs)
    err = capsys.readouterr().err
    assert "frames processed per stage {'sink': 45}" in err
    dropped = sum(r["status"] == "dropped" for r in recs)
    assert f"dropped by the latest policy {dropped}" in err
