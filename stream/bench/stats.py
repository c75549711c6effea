"""Pooling the runs of one case into the protocol's distributions.

Protocol (DESIGN.md, Performance protocol): every run's first and last ``skip`` captured frames
per stream are left out (warm-up and drain); the remaining frames of all runs are pooled into
one distribution per measure (``count, avg, p50, p95, p99, p999, max``, ms):

* ``e2e_ms`` - capture (frame stamped) to arrival at the end of the chain (the sink; the
  overlay is ready): the ``e2e`` of ``frames.jsonl``;
* ``stages_ms.<stage>`` - time inside each stage's ``process`` (``capture`` = reading the
  frame from the source);
* ``overhead_ms`` - ``e2e`` minus the time inside the stages after capture: what the engine
  itself costs per frame (queues, encode/decode, wake-ups; a plain loop's is near zero);
* ``hop_ms`` - ``overhead_ms`` divided by the chain's hops (capture -> stage 1 -> ... -> sink);
* ``cpu_ms_per_frame`` - CPU time of every process of the run (all threads) per captured
  frame, from ``/proc``: what a frame costs the machine, queueing excluded;
* ``frame_age_ms`` - from the source starting to read the frame to its arrival at the sink
  (``e2e`` + ``capture``): how old the picture is when it is shown.

Frames the engine did not carry to the end (``dropped``, ``failed``) have no latency; they are
counted in ``drops`` / ``failed`` over *all* captured frames (drops are never skipped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sonoflow.stream.bench.engines import RunOutput
from sonoflow.stream.timing import distribution


def window(records: list[dict[str, Any]], skip: int) -> list[dict[str, Any]]:
    """The records left after dropping ``skip`` at each end (capture order)."""
    if skip <= 0:
        return list(records)
    return list(records[skip:len(records) - skip])


def per_frame(records: list[dict[str, Any]], hops: int) -> dict[str, list[float]]:
    """Per-frame series (ms) of the timed records: e2e, each stage, overhead, hop, frame age."""
    series: dict[str, list[float]] = {"e2e": [], "overhead": [], "hop": [], "frame_age": []}
    stages: dict[str, list[float]] = {}
    for r in records:
        lat = r.get("latency_ms") or {}
        if "e2e" not in lat:
            continue
        e2e = float(lat["e2e"])
        inside = sum(float(v) for k, v in lat.items() if k not in ("e2e", "capture")
                     and not k.startswith("edge:"))
        series["e2e"].append(e2e)
        series["overhead"].append(e2e - inside)
        series["hop"].append((e2e - inside) / hops if hops else float("nan"))
        series["frame_age"].append(e2e + float(lat.get("capture", 0.0)))
        for k, v in lat.items():
            if k != "e2e" and not k.startswith("edge:"):
                stages.setdefault(k, []).append(float(v))
    series.update({f"stage:{k}": v for k, v in stages.items()})
    return series


def pool(runs: list[RunOutput], skip: int) -> dict[str, Any]:
    """The case's summary over its runs (see the module docstring).

    Returns:
        ``{"e2e_ms", "stages_ms", "overhead_ms", "hop_ms", "frame_age_ms", "edges_ms",
        "frames", "drops", "failed", "drop_rate", "throughput_fps", "throughput_fps_runs",
        "cpu_ms_per_frame",
        "e2e_p50_runs", "processes"}``; distributions as
        :func:`sonoflow.stream.timing.distribution`.
    """
    pooled: dict[str, list[float]] = {}
    counts = {"total": 0, "analysed": 0, "rejected": 0, "dropped": 0, "failed": 0}
    p50_runs, fps_runs, cpu_runs = [], [], []
    for run in runs:
        n_frames = sum(len(recs) for recs in run.streams.values())
        cpu_s = [d["cpu_s"] for d in run.processes.values() if d.get("cpu_s") is not None]
        if n_frames and cpu_s:
            cpu_runs.append(1000.0 * sum(cpu_s) / n_frames)
        run_e2e = []
        for recs in run.streams.values():
            for r in recs:
                counts["total"] += 1
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            s = per_frame(window(recs, skip), run.hops)
            run_e2e.extend(s["e2e"])
            for k, v in s.items():
                pooled.setdefault(k, []).extend(v)
        if run_e2e:
            p50_runs.append(round(float(np.percentile(run_e2e, 50)), 3))
        if run.throughput_fps:
            fps_runs.append(round(float(run.throughput_fps), 2))
    stages = {k[6:]: _round(distribution(v)) for k, v in sorted(pooled.items())
              if k.startswith("stage:")}
    total = counts["total"]
    return {
        "e2e_ms": _round(distribution(pooled.get("e2e", []))),
        "stages_ms": stages,
        "overhead_ms": _round(distribution(pooled.get("overhead", []))),
        "hop_ms": _round(distribution(pooled.get("hop", []))),
        "frame_age_ms": _round(distribution(pooled.get("frame_age", []))),
        "edges_ms": _edges(runs),
        "frames": counts,
        "drops": counts["dropped"],
        "failed": counts["failed"],
        "drop_rate": round(counts["dropped"] / total, 5) if total else None,
        "throughput_fps": round(float(np.mean(fps_runs)), 2) if fps_runs else None,
        "throughput_fps_runs": fps_runs,
        "cpu_ms_per_frame": round(float(np.mean(cpu_runs)), 4) if cpu_runs else None,
        "e2e_p50_runs": p50_runs,
        "processes": _processes(runs),
    }


def _edges(runs: list[RunOutput]) -> dict[str, dict[str, float]]:
    """Per-edge p50 / p99 (ms), the median over runs and streams of each run's ``latency.json``
    (edges are not in ``frames.jsonl``, so they cannot be pooled frame by frame; the sink
    skips the head of each run, not the tail)."""
    acc: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for edges in run.edges_ms.values():
            for name, d in edges.items():
                for q in ("avg", "p50", "p99", "max"):
                    if d.get(q) is not None:
                        acc.setdefault(name, {}).setdefault(q, []).append(float(d[q]))
    return {name: {q: round(float(np.median(v)), 4) for q, v in qs.items()}
            for name, qs in acc.items()}


def _processes(runs: list[RunOutput]) -> dict[str, dict[str, float]]:
    """Mean CPU % and max peak RSS per process name over the runs."""
    acc: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, d in run.processes.items():
            a = acc.setdefault(name, {"cpu_pct": [], "peak_rss_mib": []})
            if d.get("cpu_pct") is not None:
                a["cpu_pct"].append(d["cpu_pct"])
            a["peak_rss_mib"].append(d["peak_rss_mib"])
    return {name: {"cpu_pct": round(float(np.mean(a["cpu_pct"])), 1) if a["cpu_pct"] else None,
                   "peak_rss_mib": round(float(max(a["peak_rss_mib"])), 1)}
            for name, a in acc.items()}


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
