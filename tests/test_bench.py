"""`sonoflow bench`: scenario validation, the protocol's statistics, one tiny end-to-end run.

No timing assertions: numbers are checked for shape and sanity only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sonoflow.stream.bench import scenario as sc
from sonoflow.stream.bench.engines import RunOutput, run_case
from sonoflow.stream.bench.protocol import _checks, check_targets, resolve_source
from sonoflow.stream.bench.stats import per_frame, pool, window
from sonoflow.stream.errors import ConfigError

BASE = {"source": "pattern:width=64,height=48,fps=30",
        "stage": [{"key": "passthrough", "name": "hop1"}]}


def test_matrix_and_variants_expand_to_labelled_cases():
    doc = {**BASE, "matrix": {"mode": ["threads", "processes"], "pacing": ["fast", "realtime"]},
           "variant": [{"label": ""}, {"label": "plain", "engine": "plain"}]}
    s = sc.parse(doc, "t.toml")
    labels = [c.label for c in s.cases]
    # 2 x 2 pipeline cases; the plain loop has no mode, so it appears once per pacing
    assert labels == ["threads fast", "threads realtime", "processes fast",
                      "processes realtime", "plain fast", "plain realtime"]
    plain = [c for c in s.cases if c.engine == "plain"]
    assert all(c.mode == "-" for c in plain)
    assert (s.frames, s.runs, s.skip) == (1000, 3, 10)  # the protocol's defaults


def test_overrides_merge_base_then_variant():
    doc = {**BASE, "overrides": {"hop1": {"work_ms": 1.0, "sleep_ms": 0.0}},
           "variant": [{"label": "a"}, {"label": "b", "overrides": {"hop1": {"sleep_ms": 2.0}}}]}
    a, b = sc.parse(doc, "t.toml").cases
    assert a.overrides == {"hop1": {"work_ms": 1.0, "sleep_ms": 0.0}}
    assert b.overrides == {"hop1": {"work_ms": 1.0, "sleep_ms": 2.0}}


@pytest.mark.parametrize("change, needle", [
    ({"colour": "red"}, "unknown key"),
    ({"mode": "gpu"}, "mode 'gpu'"),
    ({"pacing": "slow"}, "pacing 'slow'"),
    ({"streams": 0}, "streams must be"),
    ({"hwm": -1}, "hwm must be"),
    ({"frames": 25, "skip": 10}, "leaves 5 frame(s)"),
    ({"runs": "3"}, "`runs` must be int"),
    ({"pipeline": "relay"}, "exactly one of `pipeline`"),
    ({"variant": [{"engine": "plain", "streams": 2}]}, "measures one stream"),
    ({"variant": [{"label": "x"}, {"label": "x", "pacing": "realtime"}]}, "not unique"),
    ({"variant": [{"label": "x", "speed": 1}]}, "unknown key(s) ['speed']"),
    ({"matrix": {"colour": ["red"]}}, "[matrix] axes"),
    ({"matrix": {"mode": []}}, "non-empty list"),
    ({"groups": {"hop1": 3}}, "`groups` maps a stage name"),
    ({"inline": True, "streams": 2}, "inline capture runs one stream"),
    ({"variant": [{"label": "g", "groups": ["hop1"]}]}, "`groups` maps a stage name"),
])
def test_bad_scenarios_are_rejected_with_the_reason(change, needle):
    with pytest.raises(ConfigError) as e:
        sc.parse({**BASE, **change}, "bad.toml")
    assert needle in str(e.value)
    assert "bad.toml" in str(e.value)


def test_groups_put_stages_in_runners_per_variant():
    from sonoflow.stream.bench.engines import build_pipeline
    from sonoflow.stream.graph import runner_units

    doc = {"source": BASE["source"], "stage": [{"key": "passthrough", "name": n}
                                               for n in ("a", "b", "c")],
           "variant": [{"label": "apart"},
                       {"label": "ab", "groups": {"a": "front", "b": "front"}},
                       {"label": "c+sink", "groups": {"c": "back", "sink": "back"}},
                       {"label": "b alone", "groups": {"b": ""}}]}
    s = sc.parse(doc, "t.toml")
    units = {c.label: [(n, [x.name for x in st]) for n, st in
                       runner_units(build_pipeline(s, c).stages)] for c in s.cases}
    assert units == {"apart": [("a", ["a"]), ("b", ["b"]), ("c", ["c"]), ("sink", ["sink"])],
                     "ab": [("front", ["a", "b"]), ("c", ["c"]), ("sink", ["sink"])],
                     "c+sink": [("a", ["a"]), ("b", ["b"]), ("back", ["c", "sink"])],
                     "b alone": [("a", ["a"]), ("b", ["b"]), ("c", ["c"]), ("sink", ["sink"])]}
    # the scenario's groups, a variant's over them ("" = a runner of its own)
    both = sc.parse({**doc, "groups": {"a": "g", "b": "g"},
                     "variant": [{"label": "ab"}, {"label": "a", "groups": {"b": ""}}]}, "t.toml")
    assert [[n for n, _ in runner_units(build_pipeline(both, c).stages)] for c in both.cases] \
        == [["g", "c", "sink"], ["g", "b", "c", "sink"]]
    bad = sc.parse({**doc, "variant": [{"label": "x", "groups": {"nope": "g"}}]}, "t.toml")
    with pytest.raises(ConfigError, match=r"groups name no stage \['nope'\]"):
        build_pipeline(bad, bad.cases[0])
    split = sc.parse({**doc, "variant": [{"label": "x", "groups": {"a": "g", "c": "g"}}]},
                     "t.toml")
    with pytest.raises(ConfigError, match="not one run of consecutive stages"):
        build_pipeline(split, split.cases[0])


def test_missing_source_and_unknown_name():
    with pytest.raises(ConfigError, match="`source` is required"):
        sc.parse({"stage": BASE["stage"]}, "x.toml")
    with pytest.raises(ConfigError, match="unknown scenario 'no-such-scenario'"):
        sc.find("no-such-scenario")


def test_hash_follows_the_protocol_and_content():
    s = sc.parse(dict(BASE), "t.toml")
    assert s.hash == sc.parse(dict(BASE), "t.toml").hash
    assert s.with_protocol(frames=100).hash != s.hash
    assert sc.parse({**BASE, "source": "pattern:width=32,height=32"}, "t.toml").hash != s.hash
    with pytest.raises(ConfigError):
        s.with_protocol(frames=20, skip=10)


def test_shipped_scenarios_load():
    names = [p.stem for p in sc.available()]
    for required in ("transport", "realtime", "streams", "backends", "peer"):
        assert required in names
    for p in sc.available():
        s = sc.load(str(p))
        assert s.cases, p
        check_targets(s)


def test_resolve_source_sets_the_frame_count():
    s = sc.parse({**BASE, "source": "pattern:frames=7,width=64,height=48"}, "t.toml")
    s = s.with_protocol(frames=40, skip=5)
    assert resolve_source(s) == "pattern:width=64,height=48,frames=40"
    assert resolve_source(sc.parse({**BASE, "source": "clip.mp4"}, "t.toml")) == "clip.mp4"
    per_stream = sc.parse({**BASE, "source": "pattern:seed={stream}"}, "t.toml")
    assert resolve_source(per_stream, stream=2) == "pattern:seed=2,frames=1000"


def _rec(e2e, hop1, capture=0.5, status="analysed"):
    lat = {} if e2e is None else {"e2e": e2e, "capture": capture, "hop1": hop1}
    return {"status": status, "latency_ms": lat}


def test_per_frame_series_and_window():
    recs = [_rec(10.0, 4.0), _rec(20.0, 8.0), _rec(None, 0, status="dropped")]
    s = per_frame(recs, hops=2)
    assert s["e2e"] == [10.0, 20.0]
    assert s["overhead"] == [6.0, 12.0]
    assert s["hop"] == [3.0, 6.0]
    assert s["frame_age"] == [10.5, 20.5]
    assert s["stage:hop1"] == [4.0, 8.0]
    assert window(list(range(10)), 2) == [2, 3, 4, 5, 6, 7]
    assert window([1, 2], 0) == [1, 2]


def test_pool_skips_both_ends_but_counts_every_drop():
    recs = [_rec(100.0, 1.0)] + [_rec(float(i), 0.5) for i in range(1, 11)] + \
           [_rec(None, 0, status="dropped"), _rec(500.0, 1.0)]
    run = RunOutput(streams={"s0": recs}, hops=2, throughput_fps=30.0,
                    processes={"p": {"cpu_pct": 50.0, "cpu_s": 1.3, "wall_s": 2.6,
                                     "peak_rss_mib": 10.0}})
    out = pool([run, run], skip=1)
    # the 100 ms head and the 500 ms tail are skipped; the dropped frame is counted
    assert out["e2e_ms"]["max"] == 10.0
    assert out["e2e_ms"]["count"] == 20
    assert out["frames"]["total"] == 26 and out["drops"] == 2
    assert math.isclose(out["drop_rate"], 2 / 26, rel_tol=1e-3)
    assert out["throughput_fps"] == 30.0
    assert out["cpu_ms_per_frame"] == pytest.approx(1000 * 1.3 / 13, rel=1e-3)
    assert out["processes"]["p"]["cpu_pct"] == 50.0
    assert set(out["stages_ms"]) == {"capture", "hop1"}


def test_targets_are_checked_and_unknown_names_rejected():
    s = sc.parse({**BASE, "expect": {"e2e_p50_ms_max": 5.0, "drop_rate_max": 0.01,
                                     "throughput_fps_min": 20.0}}, "t.toml")
    rec = {"e2e_ms": {"p50": 6.0}, "drop_rate": 0.0, "throughput_fps": 25.0}
    checks = _checks(s, rec)
    assert checks["e2e_p50_ms_max"] == {"target": 5.0, "value": 6.0, "pass": False}
    assert checks["drop_rate_max"]["pass"] and checks["throughput_fps_min"]["pass"]
    with pytest.raises(ConfigError, match="not a target"):
        check_targets(sc.parse({**BASE, "expect": {"latency_small": 1.0}}, "t.toml"))


def test_holoscan_engine_without_its_venv_is_skipped_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SONOFLOW_HOLOSCAN_PEER_DIR", str(tmp_path / "nowhere"))
    s = sc.parse({**BASE, "variant": [{"engine": "holoscan-greedy"}]}, "t.toml")
    out = run_case(s, s.cases[0], ["pattern:frames=20"], tmp_path / "run")
    assert not out.ok and "setup.sh" in out.skipped


@pytest.mark.integration
def test_bench_command_end_to_end(tmp_path):
    from sonoflow.stream.cli import main

    scn = tmp_path / "tiny.toml"
    scn.write_text("""
name = "tiny"
question = "smoke"
source = "pattern:width=64,height=48,fps=30"
[[stage]]
key = "passthrough"
name = "hop1"
[[variant]]
label = "threads"
mode = "threads"
[[variant]]
label = "plain"
engine = "plain"
[[variant]]
label = "inline"
fuse = true
inline = true
[expect]
drop_rate_max = 0.0
""")
    out = tmp_path / "res" / "bench.jsonl"
    code = main(["bench", str(scn), "--quick", "--frames", "30", "--out", str(out),
                 "--work", str(tmp_path / "work")])
    assert code == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case"] for r in recs] == ["threads", "plain", "inline"]
    for r in recs:
        # the keys DESIGN.md's output contract fixes
        for k in ("scenario", "machine", "e2e_ms", "stages_ms", "drop_rate", "throughput_fps",
                  "streams"):
            assert k in r
        assert set(r["e2e_ms"]) >= {"avg", "p50", "p95", "p99", "p999", "max"}
        assert r["scenario"] == "tiny" and len(r["scenario_hash"]) == 16
        assert r["frames"]["total"] == 30 and r["drop_rate"] == 0.0
        assert r["e2e_ms"]["count"] == 20  # 30 frames, 5 skipped at each end
        assert 0 < r["e2e_ms"]["p50"] <= r["e2e_ms"]["p99"] <= r["e2e_ms"]["max"] < 10_000
        assert r["throughput_fps"] > 0 and "hop1" in r["stages_ms"]
        assert r["checks"]["drop_rate_max"]["pass"]
        assert r["processes"] and r["versions"]["sonoflow"]
    assert recs[0]["hops"] == 2 and recs[0]["pipeline"] == ["hop1", "sink"]
    # capture, hop1 and sink in one runner: no socket at all, so no per-hop figure
    assert recs[2]["hops"] == 0 and recs[2]["inline_capture"] and recs[2]["fused"]
    assert recs[2]["hop_ms"]["count"] == 0 or math.isnan(recs[2]["hop_ms"]["p50"])
    assert "plain" in recs[0]["vs"]
    md = out.with_suffix(".md").read_text()
    assert "### tiny" in md and "| threads |" in md and "| plain |" in md
    for kind in ("cdf", "stages"):
        png = out.with_name(f"bench.tiny.{kind}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "work" / "tiny" / "threads" / "run1" / "s0" / "frames.jsonl").is_file()
    assert recs[1]["vs"] == {}  # reference engines are compared against, not compared
    # the table again from the records alone
    assert main(["bench", "--from", str(out), "--out", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == md
    assert (tmp_path / "again.tiny.cdf.png").read_bytes()[:4] == b"\x89PNG"


def test_scenario_files_resolve_by_name_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sc.find("transport").name == "transport.toml"
    assert Path(sc.find("transport")).is_file()


def test_a_variant_setting_pins_its_matrix_axis():
    doc = {**BASE, "matrix": {"mode": ["threads", "processes", "tcp"]},
           "variant": [{"label": "all"}, {"label": "hwm1", "mode": "threads", "hwm": 1}]}
    cases = sc.parse(doc, "t.toml").cases
    assert [(c.label, c.mode, c.hwm) for c in cases] == [
        ("all threads", "threads", 0), ("all processes", "processes", 0),
        ("all tcp", "tcp", 0), ("hwm1", "threads", 1)]


def test_set_overrides_every_case_and_the_hash():
    s = sc.parse({**BASE, "variant": [{"label": "a", "overrides": {"hop1": {"work_ms": 1.0}}},
                                      {"label": "b"}]}, "t.toml")
    extra = sc.parse_set(["hop1.work_ms=0.5", "hop1.sleep_ms=2", "sink.video=true"])
    assert extra == {"hop1": {"work_ms": 0.5, "sleep_ms": 2}, "sink": {"video": True}}
    t = s.with_overrides(extra)
    assert [c.overrides["hop1"]["work_ms"] for c in t.cases] == [0.5, 0.5]
    assert t.hash != s.hash
    assert sc.parse_set(["infer.weights_dir=runs/x"]) == {"infer": {"weights_dir": "runs/x"}}
    with pytest.raises(ConfigError, match="STAGE.KEY=VALUE"):
        sc.parse_set(["precision=int8"])
    # --set changes the overrides only: a case's other settings survive it
    u = sc.parse({**BASE, "variant": [{"label": "f", "fuse": True, "inline": True,
                                       "max_in_flight": 2}]}, "t.toml").with_overrides(extra)
    assert (u.cases[0].fuse, u.cases[0].inline, u.cases[0].max_in_flight) == (True, True, 2)


def test_max_in_flight_axis_labels_cases_and_reaches_the_pipeline():
    from sonoflow.stream.bench.engines import build_pipeline

    s = sc.parse({**BASE, "matrix": {"max_in_flight": [0, 1]},
                  "variant": [{"label": "p", "mode": "processes"},
                              {"label": "plain", "engine": "plain"}]}, "t.toml")
    assert [(c.label, c.max_in_flight) for c in s.cases] == [
        ("p no credit window", 0), ("p max 1 in flight", 1), ("plain", 0)]
    assert build_pipeline(s, s.cases[1]).max_in_flight == 1
    assert build_pipeline(s, s.cases[0]).max_in_flight == 0
    with pytest.raises(ConfigError, match="max_in_flight"):
        sc.parse({**BASE, "max_in_flight": -1}, "t.toml")
