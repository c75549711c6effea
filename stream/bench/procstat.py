"""CPU and memory per process, read from ``/proc`` (Linux) while a run goes on.

A :class:`ProcSampler` thread reads ``/proc/<pid>/stat`` (user + system CPU time) and
``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) of the named processes every ``period_s``.
CPU is reported as a percentage of one core over the sampled window (200 % = two cores
busy); memory as the peak resident set (MiB). Where ``/proc`` is absent the sampler records
nothing and says so.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def memory_mib(pid: int) -> tuple[float, float] | None:
    """``(rss_mib, peak_rss_mib)`` of ``pid`` from ``/proc/<pid>/status``, None when gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) / 1024.0  # kB -> MiB
    if "VmRSS" not in vals:
        return None
    return vals["VmRSS"], vals.get("VmHWM", vals["VmRSS"])


@dataclass
class _Track:
    pid: int
    t0: float
    cpu0: float
    t1: float
    cpu1: float
    peak_mib: float = 0.0


@dataclass
class ProcSampler:
    """Samples named processes in a background thread.

    Args:
        period_s: sampling period in seconds.

    Use :meth:`watch` to add processes (``name -> pid``) once they exist, :meth:`stop` at the
    end of the run, then :meth:`summary`.
    """

    period_s: float = 0.25
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @staticmethod
    def supported() -> bool:
        return Path("/proc/self/stat").is_file()

    def watch(self, processes: dict[str, int]) -> None:
        """Start tracking ``processes`` (name -> pid); names already tracked are kept."""
        now = time.monotonic()
        with self._lock:
            for name, pid in processes.items():
                if name in self._tracks:
                    continue
                cpu = cpu_seconds(pid)
                if cpu is None:
                    continue
                mem = memory_mib(pid)
                self._tracks[name] = _Track(pid, now, cpu, now, cpu, mem[1] if mem else 0.0)
        if self._thread is None and self.supported():
            self._thread = threading.Thread(target=self._loop, name="sonoflow-bench-procstat",
                                            daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            for t in self._tracks.values():
                cpu = cpu_seconds(t.pid)
                if cpu is None:
                    continue  # exited: keep its last reading
                t.t1, t.cpu1 = now, cpu
                mem = memory_mib(t.pid)
                if mem is not None:
                    t.peak_mib = max(t.peak_mib, mem[0], mem[1])

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def stop(self) -> None:
        """Take a last sample and end the thread."""
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"cpu_pct": % of one core, "cpu_s": s, "wall_s": s, "peak_rss_mib": MiB}}``."""
        out = {}
        with self._lock:
            for name, t in self._tracks.items():
                wall = t.t1 - t.t0
                cpu = t.cpu1 - t.cpu0
                out[name] = {"cpu_pct": round(100.0 * cpu / wall, 1) if wall > 0 else None,
                             "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                             "peak_rss_mib": round(t.peak_mib, 1)}
        return out
