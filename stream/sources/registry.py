"""From the string a user types to an opened :class:`~sonoflow.stream.sources.base.Source`.

Accepted specs (checked in this order):

============================  ===============================================================
``sim:seed=1,frames=90,...``  the simulator (``sonoflow.stream.sources.sim.SimSource``)
``pattern:frames=100,...``    a synthetic test pattern (transport tests and benchmarks)
``zmq:tcp://host:port``       an external producer pushing our wire format (also ``zmq:ipc://``)
``camera:N``, ``/dev/videoN`` a camera or capture card through OpenCV / V4L2
a folder                      its png/jpg/bmp/tif images in natural order
``*.mha``, ``*.mhd``          MetaImage / PLUS sequences
``*.dcm``, or DICM magic      DICOM single frames and cine
``*.npz``                     recorded arrays (``sonoflow.stream.sources.npz.NpzSource``)
``*.mp4 .mov .avi .mkv .m4v .webm``  video files through PyAV
============================  ===============================================================

Source modules are imported only when their spec is used, so ``sonoflow --help`` stays fast and
a missing optional module affects only its own kind of source.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Source

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
METAIMAGE_EXTENSIONS = (".mha", ".mhd")

ACCEPTED = ("sim:<key=value,...> (simulator)", "pattern:<key=value,...> (test pattern)",
            "zmq:tcp://HOST:PORT or zmq:ipc:///PATH (external producer)",
            "camera:N or /dev/videoN (camera / capture card)",
            "a folder of png/jpg/bmp/tif images", ".mha/.mhd (MetaImage/PLUS)",
            ".dcm or any DICOM Part-10 file (DICOM)", ".npz (recorded arrays)",
            f"{'/'.join(e[1:] for e in VIDEO_EXTENSIONS)} (video)")


def _load(module: str, name: str) -> type:
    """Import a source class lazily, turning a missing module into a clear error."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise SourceError(module, f"the source module is not available ({e}); this build "
                                  "cannot read this kind of source") from e


def source_kind(spec: str) -> str:
    """The kind of source ``spec`` names, without opening it.

    Args:
        spec: the source string.

    Returns:
        One of ``"sim"``, ``"pattern"``, ``"zmq"``, ``"camera"``, ``"images"``, ``"metaimage"``, ``"dicom"``,
        ``"npz"``, ``"video"``.

    Raises:
        SourceError: the spec matches no kind (the message lists what is accepted), or names
            a file that does not exist with no recognisable extension.
    """
    from sonoflow.stream.sources.camera import parse_device
    from sonoflow.stream.sources.dicom import is_dicom_file

    if spec.startswith("sim:"):
        return "sim"
    if spec.startswith("pattern:"):
        return "pattern"
    if spec.startswith("zmq:"):
        return "zmq"
    if parse_device(spec) is not None:
        return "camera"
    path = Path(spec)
    if path.is_dir():
        return "images"
    suffix = path.suffix.lower()
    if suffix in METAIMAGE_EXTENSIONS:
        return "metaimage"
    if suffix == ".dcm":
        return "dicom"
    if suffix == ".npz":
        return "npz"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if path.is_file() and is_dicom_file(path):
        return "dicom"
    if not path.exists() and not spec.startswith(("camera:", "/dev/")):
        problem = "no such file or folder, and not a source string"
    elif spec.startswith("camera:"):
        problem = "camera spec must be camera:N with N a device number"
    else:
        problem = "unrecognised source"
    raise SourceError(spec, f"{problem}. Accepted: " + "; ".join(ACCEPTED))


def open_source(spec: str, **options: Any) -> Source:
    """Build the source ``spec`` names and open it.

    ``open()`` is idempotent on every source, so a caller may call it again.

    Args:
        spec: the source string (see the module docstring).
        **options: keyword options of the chosen source class (e.g. ``fps``,
            ``value_range``, ``idle_timeout_s``); unknown options are an error.

    Returns:
        The opened source.

    Raises:
        SourceError: unknown spec, options the source does not take, or the source's own
            open failure (missing file, corrupt data, no device, ...).
    """
    kind = source_kind(spec)
    if kind == "sim":
        cls = _load("sonoflow.stream.sources.sim", "SimSource")
        args: tuple = (spec,)
    elif kind == "pattern":
        from sonoflow.stream.sources.pattern import PatternSource

        cls, args = PatternSource, (spec,)
    elif kind == "zmq":
        from sonoflow.stream.sources.zmq_producer import ZmqSource

        cls, args = ZmqSource, (spec[len("zmq:"):],)
        options.setdefault("spec", spec)
    elif kind == "camera":
        from sonoflow.stream.sources.camera import CameraSource, parse_device

        cls, args = CameraSource, (parse_device(spec),)
        options.setdefault("spec", spec)
    elif kind == "images":
        from sonoflow.stream.sources.images import ImageFolderSource

        cls, args = ImageFolderSource, (spec,)
    elif kind == "metaimage":
        from sonoflow.stream.sources.metaimage import MetaImageSource

        cls, args = MetaImageSource, (spec,)
    elif kind == "dicom":
        from sonoflow.stream.sources.dicom import DicomSource

        cls, args = DicomSource, (spec,)
    elif kind == "npz":
        cls = _load("sonoflow.stream.sources.npz", "NpzSource")
        args = (spec,)
    else:
        from sonoflow.stream.sources.video import VideoSource

        cls, args = VideoSource, (spec,)
    try:
        inspect.signature(cls).bind(*args, **options)
    except TypeError as e:
        raise SourceError(spec, f"bad options {sorted(options)} for a {kind} source "
                                f"({cls.__name__}): {e}") from e
    source = cls(*args, **options)
    if not source.spec:
        source.spec = spec
    source.open()
    return source
