"""sonoflow.stream: capture, stages, runtime, sinks and the simulator (no torch here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sonoflow")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
