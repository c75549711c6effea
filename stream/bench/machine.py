"""What a benchmark record says about where it ran: the machine and the software versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

_PACKAGES = ("sonoflow", "numpy", "pyzmq", "msgspec", "onnxruntime", "opencv-python-headless",
             "torch", "holoscan-cu12")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (a shared machine's contention, stated beside figures)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(note: str = "") -> dict:
    """``{"cpu", "cores", "memory_gib", "os", "python", "host", "note", "load_avg"}``.

    Args:
        note: free text set by the user (``--machine-note``), e.g. "shared with other work".
    """
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": mem,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "host": platform.node(), "note": note,
            "load_avg": load_average()}


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape the figures (absent ones are left out)."""
    out = {}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import zmq

        out["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    return out
