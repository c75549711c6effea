"""Latency bookkeeping: per-frame stage/edge/end-to-end times from stamps, and distributions.

All stamps use ``time.monotonic_ns()`` (CLOCK_MONOTONIC is system-wide on Linux, so stamps from
different processes on one host compare). Across hosts only per-stage times are meaningful.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sonoflow.stream.messages import FrameHeader

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def frame_latency_ms(header: FrameHeader, t_end_ns: int) -> dict[str, float]:
    """Per-stage times and end-to-end latency of one frame, in ms.

    Args:
        header: the frame header with its stamps (capture first).
        t_end_ns: when the frame reached the end of the pipeline (monotonic ns).

    Returns:
        ``{"e2e": ms, "<stage>": ms, ..., "edge:<a>-><b>": ms}``; ``e2e`` is capture to
        ``t_end_ns``.
    """
    out: dict[str, float] = {"e2e": (t_end_ns - header.capture_ns) / 1e6}
    prev = None
    for s in header.stamps:
        out[s.stage] = out.get(s.stage, 0.0) + (s.t_out_ns - s.t_in_ns) / 1e6
        if prev is not None:
            out[f"edge:{prev.stage}->{s.stage}"] = (s.t_in_ns - prev.t_out_ns) / 1e6
        prev = s
    return out


def distribution(values_ms) -> dict[str, float]:
    """``{"count", "avg", "p50", "p95", "p99", "p999", "max"}`` of a list of ms values."""
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"count": 0, "avg": None, "p50": None, "p95": None, "p99": None, "p999": None,
                "max": None}
    d = {"count": int(a.size), "avg": float(a.mean())}
    for k, q in PERCENTILES.items():
        d[k] = float(np.percentile(a, q))
    d["max"] = float(a.max())
    return d


class LatencyBook:
    """Collects per-frame latencies and summarises them (latency.json)."""

    def __init__(self, skip_head: int = 0):
        self.skip_head = skip_head
        self._series: dict[str, list[float]] = defaultdict(list)
        self._n = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def add(self, lat_ms: dict[str, float], t_end_ns: int) -> None:
        self._n += 1
        if self.first_ns is None:
            self.first_ns = t_end_ns
        self.last_ns = t_end_ns
        if self._n <= self.skip_head:
            return
        for k, v in lat_ms.items():
            self._series[k].append(v)

    @property
    def frames(self) -> int:
        return self._n

    def summary(self, drops: int) -> dict:
        stages = {k: distribution(v) for k, v in self._series.items()
                  if k != "e2e" and not k.startswith("edge:")}
        edges = {k[5:]: distribution(v) for k, v in self._series.items() if k.startswith("edge:")}
        span_s = ((self.last_ns - self.first_ns) / 1e9) if self.first_ns and self._n > 1 else 0.0
        fps = (self._n - 1) / span_s if span_s > 0 else None
        return {
            "e2e_ms": distribution(self._series.get("e2e", [])),
            "stages_ms": stages,
            "edges_ms": edges,
            "drops": drops,
            "throughput_fps": fps,
            "frames_timed": self._n,
            "skipped_head": min(self.skip_head, self._n),
        }
