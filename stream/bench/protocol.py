"""Run a scenario by the protocol and build its records.

All cases of a scenario are measured side by side: runs are interleaved (run 1 of every case,
then run 2 of every case, ...), so slow drifts of a shared machine fall on every case alike.
Each case gives one record (one JSON line, :mod:`sonoflow.stream.bench.report`) pooled over its
runs (:mod:`sonoflow.stream.bench.stats`), checked against the scenario's ``[expect]`` targets
and compared with the scenario's reference engines (plain loop, Holoscan) where it has them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sonoflow.stream.bench import machine as machine_info
from sonoflow.stream.bench.engines import RunOutput, build_pipeline, run_case
from sonoflow.stream.bench.scenario import Scenario
from sonoflow.stream.bench.stats import per_frame, pool, window
from sonoflow.stream.errors import ConfigError, SourceError
from sonoflow.stream.graph import runner_units

log = logging.getLogger(__name__)

SCHEMA = "sonoflow.bench/1"
#: ``[expect]`` target names: ``<measure>_<quantile>_ms_max`` or these two.
_TARGET = re.compile(r"^(e2e|hop|overhead|frame_age)_(avg|p50|p95|p99|p999|max)_ms_max$")
_OTHER_TARGETS = {"drop_rate_max", "throughput_fps_min"}


def cache_dir() -> Path:
    """Where prerendered clips are kept (``$XDG_CACHE_HOME/sonoflow/bench``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sonoflow" / "bench"


def resolve_source(scn: Scenario, on_progress: Callable[[str], None] | None = None,
                   stream: int = 0) -> str:
    """The source spec stream number ``stream`` reads: ``{stream}`` in the scenario's source
    replaced by the stream's index (e.g. ``sim:seed={stream}``: a different clip per stream);
    ``frames=`` set for ``pattern:``/``sim:``; a ``sim:`` source with ``prerender = true``
    rendered once into an npz cache (so the simulator's cost does not compete with the
    pipeline for the CPU).

    Raises:
        SourceError: the simulator cannot render the clip or the cache cannot be written.
    """
    spec = scn.source.replace("{stream}", str(stream))
    if spec.startswith(("pattern:", "sim:")):
        body = re.sub(r"(^|,)frames=\d+", "", spec.split(":", 1)[1]).strip(",")
        spec = f"{spec.split(':', 1)[0]}:{body + ',' if body else ''}frames={scn.frames}"
    if not (scn.prerender and spec.startswith("sim:")):
        return spec
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    path = cache_dir() / f"sim-{key}.npz"
    if path.is_file():
        return str(path)
    from sonoflow.stream.sources.registry import open_source

    if on_progress:
        on_progress(f"prerendering {spec} -> {path} (once; cached)")
    src = open_source(spec)
    try:
        frames = [f.image for f in src.frames()]
        mm = src.calibration.mm_per_px
    finally:
        src.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, frames=np.stack(frames), fps=np.float64(src.fps),
                 mm_per_px=np.asarray(mm, np.float64), schema=np.str_("sonoflow.sim/1"))
        tmp.replace(path)
    except OSError as e:
        raise SourceError(path, f"cannot write the prerendered clip: {e}; free disk space or "
                                "set XDG_CACHE_HOME to a writable folder") from e
    return str(path)


def check_targets(scn: Scenario) -> None:
    """Validate the scenario's ``[expect]`` target names.

    Raises:
        ConfigError: an unknown target name.
    """
    for name in scn.expect:
        if not (_TARGET.match(name) or name in _OTHER_TARGETS):
            raise ConfigError(f"{scn.path}: [expect] {name!r} is not a target; use "
                              "<e2e|hop|overhead|frame_age>_<avg|p50|p95|p99|p999|max>_ms_max, "
                              f"or one of {sorted(_OTHER_TARGETS)}")


def _checks(scn: Scenario, rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, target in scn.expect.items():
        m = _TARGET.match(name)
        if m:
            value = rec[f"{m.group(1)}_ms"].get(m.group(2))
            ok = value is not None and value <= target
        elif name == "drop_rate_max":
            value = rec["drop_rate"]
            ok = value is not None and value <= target
        else:
            value = rec["throughput_fps"]
            ok = value is not None and value >= target
        out[name] = {"target": target, "value": value, "pass": bool(ok)}
    return out


def run_scenario(scn: Scenario, work_root: Path, note: str = "",
                 on_progress: Callable[[str], None] | None = None
                 ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Measure every case of ``scn``.

    Args:
        scn: the scenario (its protocol already set: frames, runs, skip).
        work_root: folder for the runs' outputs (``<scenario>/<case>/run<k>/``).
        note: free text about the machine, stored in every record's ``machine.note``.
        on_progress: called with a line of text before each run.

    Returns:
        ``(records, series)``: one record per case, and case label -> the pooled per-frame
        end-to-end latencies (ms, float64 array) the CDF plots draw.

    Raises:
        ConfigError: a case cannot be built; SourceError: the source cannot be read.
    """
    check_targets(scn)
    for case in scn.cases:
        build_pipeline(scn, case)  # fail before any run on a bad pipeline or override
    sources = [resolve_source(scn, on_progress, i)
               for i in range(max(c.streams for c in scn.cases))]
    mach = machine_info.machine(note)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    runs: dict[str, list[RunOutput]] = {c.label: [] for c in scn.cases}
    for k in range(scn.runs):
        for case in scn.cases:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", case.label).strip("_")
            if on_progress:
                on_progress(f"{scn.name}: {case.label}, run {k + 1}/{scn.runs}")
            out = run_case(scn, case, sources[:case.streams],
                           work_root / scn.name / slug / f"run{k + 1}")
            if out.error:
                log.warning("%s / %s run %d: %s", scn.name, case.label, k + 1, out.error)
            runs[case.label].append(out)
    mach["load_avg_end"] = machine_info.load_average()
    versions = machine_info.versions()
    records = []
    series: dict[str, np.ndarray] = {}
    for case in scn.cases:
        rr = runs[case.label]
        usable = [r for r in rr if r.ok]
        pipe = build_pipeline(scn, case)
        rec: dict[str, Any] = {
            "schema": SCHEMA, "scenario": scn.name, "scenario_hash": scn.hash,
            "case": case.label, "question": scn.question, "engine": case.engine,
            "mode": case.mode, "pacing": case.pacing, "policy": case.policy or "pipeline",
            "hwm": pipe.hwm, "max_in_flight": pipe.max_in_flight,
            "streams": case.streams, "overrides": case.overrides,
            "pipeline": [s.name for s in pipe.stages], "fused": case.fuse,
            "groups": dict(case.groups), "inline_capture": case.inline,
            # socket hops a frame crosses after capture: one per runner (a fused chain is
            # one), less the one an inline capture saves
            "hops": len(runner_units(pipe.stages)) - (1 if case.inline else 0),
            "source": scn.source, "source_resolved": sources[:case.streams],
            "protocol": {"frames": scn.frames, "runs": scn.runs, "skip": scn.skip,
                         "runs_ok": len(usable),
                         "warmup": f"first and last {scn.skip} frames of every run and stream "
                                   "excluded from the distributions (not from drop counts)"},
            "date": started, "machine": mach, "versions": versions,
            **pool(usable, scn.skip),
            "ok": len(usable) == len(rr),
            "errors": [r.error for r in rr if r.error],
            "skipped": next((r.skipped for r in rr if r.skipped), None),
            "events": sorted({e for r in rr for e in r.events})[:20],
        }
        rec["checks"] = _checks(scn, rec) if usable else {}
        records.append(rec)
        series[case.label] = np.asarray(
            [v for r in usable for recs in r.streams.values()
             for v in per_frame(window(recs, scn.skip), r.hops)["e2e"]], np.float64)
    _compare(records)
    return records, series


def _compare(records: list[dict[str, Any]]) -> None:
    """Add ``vs`` to each sonoflow record: its e2e and overhead p50 over those of every
    reference case (engines other than sonoflow: the plain loop, Holoscan) with the same
    pacing (reference records get an empty ``vs``)."""
    refs = [r for r in records if r["engine"] != "sonoflow" and r["e2e_ms"]["count"]]
    for rec in records:
        if rec["engine"] != "sonoflow":
            rec["vs"] = {}
            continue
        vs = {}
        for ref in refs:
            if ref is rec or ref["pacing"] != rec["pacing"] or not rec["e2e_ms"]["count"]:
                continue
            e, o = ref["e2e_ms"]["p50"], ref["overhead_ms"]["p50"]
            vs[ref["case"]] = {
                "e2e_p50_ratio": round(rec["e2e_ms"]["p50"] / e, 3) if e else None,
                "overhead_p50_ratio": round(rec["overhead_ms"]["p50"] / o, 3) if o else None,
                "overhead_p50_minus_ms": round(rec["overhead_ms"]["p50"] - o, 4),
                "cpu_per_frame_minus_ms_per_hop": (
                    round((rec["cpu_ms_per_frame"] - ref["cpu_ms_per_frame"]) / rec["hops"], 4)
                    if rec["cpu_ms_per_frame"] is not None and rec["hops"]
                    and ref["cpu_ms_per_frame"] is not None else None),
            }
        rec["vs"] = vs
