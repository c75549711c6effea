"""The wire format: one ZeroMQ multipart message per event, ``[topic, header, buffer...]``.

* ``topic``  = ``b"<kind>/<stream_id>"`` (SUB prefix filtering works on it).
* ``header`` = msgpack of a typed, versioned struct (msgspec), tagged by ``kind``.
* buffers    = raw C-contiguous arrays (names used by the stages: ``image`` uint8 HxW grey or
  HxWx3 RGB, blanked outside the sector after ``preprocess``; ``gray`` uint8 HxW for the models;
  ``sector_mask`` uint8 HxW 0/255; ``lesion_mask`` uint8 HxW detection ``mask_id``s;
  ``liver_mask`` uint8 HxW 0/1; ``overlay`` uint8 HxWx3 RGB from ``render``), described in the header by :class:`BufferSpec`
  (index into the buffer list, dtype, shape, layout). Sent with ``copy=False``; decoded as
  **read-only** numpy views over the received frames.

Kinds: ``frame``, ``lesion``, ``case``, ``eos``, ``error``. A frame header is *enriched* stage
by stage ("enrich, don't join"): each stage fills its own result field and appends a
:class:`Stamp`. No pickle anywhere.

Anyone can decode a packet with plain ``msgpack``: the header is a map whose ``kind`` key names
the struct, ``schema`` its version (``"sonoflow.<kind>/<major>"``), and ``buffers`` lists
``{"name", "index", "dtype", "shape", "layout"}`` where ``index`` counts from the first frame
after the header.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import numpy as np

from sonoflow.stream.errors import WireError

SCHEMA_MAJOR = 1
KINDS = ("frame", "lesion", "case", "eos", "error")
# Frame statuses, in the order they are decided along the pipeline.
STATUSES = ("pending", "analysed", "rejected", "dropped", "failed")
# dtypes allowed on the wire (little-endian, fixed size): nothing object-like.
WIRE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64", "bool")


class BufferSpec(msgspec.Struct, frozen=True):
    """Describes one out-of-band array. ``index`` counts from the first buffer frame."""

    name: str
    index: int
    dtype: str
    shape: tuple[int, ...]
    layout: str = ""  # "HW", "HWC", "N4", ... (free text, for humans and checks)


class Stamp(msgspec.Struct, frozen=True):
    """One stage's visit: monotonic-clock ``time.monotonic_ns()`` on the host that ran it."""

    stage: str
    t_in_ns: int
    t_out_ns: int


# --- stage results (each stage owns one field of the frame header) -------------------------


class PreprocessResult(msgspec.Struct):
    """Filled by ``preprocess``. Pixel coordinates are original-frame pixels."""

    sector_kind: str = "none"  # "convex" | "linear" | "phased" | "full" | "none"
    sector_xyxy_px: tuple[int, int, int, int] | None = None
    mm_per_px: tuple[float, float] | None = None  # (x, y); None = uncalibrated
    calibration_source: str = "none"  # "dicom-regions" | "depth-ruler" | "simulator" | "user" | "none"
    calibration_note: str = ""  # why a calibration was refused, if it was
    layout_changed: bool = False
    blanked: bool = False  # pixels outside the sector were zeroed in the image buffer


class QualityResult(msgspec.Struct):
    """Filled by ``quality``. ``score`` in [0, 1]; ``flags`` name what is wrong."""

    score: float = 0.0
    flags: list[str] = msgspec.field(default_factory=list)
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    keyframe: bool = True  # the key-frame policy let this frame through to ``infer``
    reason: str = ""  # why it was not a key frame (shown by the renderer)


class Detection(msgspec.Struct):
    """One lesion candidate in one frame (original-frame pixels)."""

    xyxy_px: tuple[float, float, float, float]
    confidence: float
    label: str = "lesion"  # written as "class" in frames.jsonl
    class_probs: dict[str, float] = msgspec.field(default_factory=dict)
    malignancy: float | None = None
    features: dict[str, float] = msgspec.field(default_factory=dict)
    track_id: int | None = None
    # value of this detection's pixels in the frame's "lesion_mask" buffer (uint8 HxW, 0 =
    # background), when the segmentation head produced a mask for it
    mask_id: int | None = None


class InferResult(msgspec.Struct):
    """Filled by ``infer``."""

    detections: list[Detection] = msgspec.field(default_factory=list)
    steatosis_probs: dict[str, float] = msgspec.field(default_factory=dict)
    fibrosis_probs: dict[str, float] = msgspec.field(default_factory=dict)
    liver_fraction: float | None = None
    models: dict[str, str] = msgspec.field(default_factory=dict)  # model id -> sha256[:12]
    backend: str = ""
    precision: str = ""
    tta: str = ""  # frame-network test-time augmentation: "none", "hflip" ("" = not stated)


class LesionSummary(msgspec.Struct):
    """A lesion as known so far (live) or at the end (case). Keys match case.json."""

    lesion_id: int
    first_frame: int
    last_frame: int
    best_frame: int
    xyxy_px: tuple[float, float, float, float]
    long_axis_mm: float | None
    short_axis_mm: float | None
    label: str  # written as "class" in case.json
    class_probs: dict[str, float]
    malignancy: float | None
    features: dict[str, float]
    n_frames: int = 0
    confirmed: bool = True


# --- headers --------------------------------------------------------------------------------


class FrameHeader(msgspec.Struct, tag="frame", tag_field="kind"):
    stream_id: str
    seq: int  # +1 per packet on this stream; a gap is a drop
    frame_index: int  # index in the source
    pts: int  # presentation time in ``time_base`` units
    time_base: tuple[int, int]  # (num, den) seconds
    capture_ns: int  # time.monotonic_ns() when the frame left capture
    pixel_format: str  # "gray8" | "rgb24"
    pixel_spacing_mm: tuple[float, float] | None = None  # (x, y) from the source, if it knows
    spacing_source: str = "none"  # "dicom-regions" | "simulator" | "user" | "none"
    spacing_note: str = ""  # why the source's own calibration was refused, if it was
    source: str = ""
    buffers: list[BufferSpec] = msgspec.field(default_factory=list)
    status: str = "pending"
    error: str | None = None
    preprocess: PreprocessResult | None = None
    quality: QualityResult | None = None
    infer: InferResult | None = None
    lesions: list[LesionSummary] = msgspec.field(default_factory=list)  # live view of tracks
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # free, namespaced by stage key
    stamps: list[Stamp] = msgspec.field(default_factory=list)
    schema: str = "sonoflow.frame/1"

    @property
    def pts_s(self) -> float:
        return self.pts * self.time_base[0] / self.time_base[1]


class LesionHeader(msgspec.Struct, tag="lesion", tag_field="kind"):
    stream_id: str
    seq: int  # seq of the frame that updated it
    lesion: LesionSummary
    schema: str = "sonoflow.lesion/1"


class CaseHeader(msgspec.Struct, tag="case", tag_field="kind"):
    stream_id: str
    case: dict[str, Any]  # the case.json document ("schema": "sonoflow.case/1")
    buffers: list[BufferSpec] = msgspec.field(default_factory=list)  # key-frame thumbnails
    schema: str = "sonoflow.case/1"


class EosHeader(msgspec.Struct, tag="eos", tag_field="kind"):
    """End of stream. ``last_seq`` lets the receiver count drops at the tail."""

    stream_id: str
    last_seq: int
    frames_total: int
    reason: str = "end"  # "end" | "error" | "stopped"
    error: str | None = None
    schema: str = "sonoflow.eos/1"


class ErrorHeader(msgspec.Struct, tag="error", tag_field="kind"):
    stream_id: str
    seq: int | None
    stage: str
    error_type: str
    message: str
    fatal: bool = False
    schema: str = "sonoflow.error/1"


Header = Union[FrameHeader, LesionHeader, CaseHeader, EosHeader, ErrorHeader]
_HEADER_TYPES = {"frame": FrameHeader, "lesion": LesionHeader, "case": CaseHeader,
                 "eos": EosHeader, "error": ErrorHeader}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)
_raw_decoder = msgspec.msgpack.Decoder()


@dataclass
class Packet:
    """A header plus its named arrays. What stages receive and return.

    Arrays received from the wire are read-only views; a stage that wants to change pixels
    makes a copy and stores it under a (possibly new) name.
    """

    header: Header
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return _kind_of(self.header)


def _kind_of(header: Header) -> str:
    return type(header).__struct_config__.tag  # type: ignore[attr-defined]


def topic_for(header: Header) -> bytes:
    return f"{_kind_of(header)}/{header.stream_id}".encode()


def encode(packet: Packet) -> list:
    """Encode a packet as multipart frames ``[topic, header, buffer...]`` (zero-copy buffers).

    The header's ``buffers`` list is rewritten from ``packet.arrays``. Arrays are made
    C-contiguous (a copy only when they are not). The caller must not mutate the arrays after
    handing them to ``send``.

    Raises:
        WireError: an array has a dtype that cannot go on the wire.
    """
    header = packet.header
    bufs: list = []
    specs: list[BufferSpec] = []
    for i, (name, arr) in enumerate(packet.arrays.items()):
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in WIRE_DTYPES:
            raise WireError(f"array {name!r} has dtype {a.dtype.name}; allowed: {WIRE_DTYPES}")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        layout = {2: "HW", 3: "HWC"}.get(a.ndim, "") if name in ("image", "model_input") else ""
        specs.append(BufferSpec(name=name, index=i, dtype=a.dtype.name, shape=tuple(a.shape),
                                layout=layout))
        bufs.append(memoryview(a).cast("B") if a.size else b"")
    if hasattr(header, "buffers"):
        header.buffers = specs
    elif specs:
        raise WireError(f"{_kind_of(header)} packets carry no buffers, got {list(packet.arrays)}")
    return [topic_for(header), _encoder.encode(header), *bufs]


def decode(frames: list) -> Packet:
    """Decode ``[topic, header, buffer...]`` into a :class:`Packet` with read-only arrays.

    ``frames`` may be ``bytes`` or ``zmq.Frame`` objects (their ``.buffer`` is used, no copy).

    Raises:
        WireError: wrong frame count, malformed header, unknown kind or schema version,
            buffer size that does not match its spec.
    """
    if len(frames) < 2:
        raise WireError(f"expected [topic, header, buffer...], got {len(frames)} frame(s)")
    raw = [f.buffer if hasattr(f, "buffer") else f for f in frames]
    header_bytes = raw[1]
    try:
        header = _decoder.decode(header_bytes)
    except msgspec.ValidationError as e:
        _explain_schema(header_bytes, e)
        raise WireError(f"malformed header: {e}") from e
    except msgspec.DecodeError as e:
        raise WireError(f"header is not msgpack: {e}") from e
    _check_schema(header)
    topic = bytes(raw[0])
    if topic != topic_for(header):
        raise WireError(f"topic {topic!r} does not match header (expected {topic_for(header)!r})")
    arrays: dict[str, np.ndarray] = {}
    specs = getattr(header, "buffers", [])
    if len(raw) - 2 != len(specs):
        raise WireError(f"header lists {len(specs)} buffer(s) but {len(raw) - 2} arrived")
    for spec in specs:
        if spec.dtype not in WIRE_DTYPES:
            raise WireError(f"buffer {spec.name!r}: dtype {spec.dtype!r} not in {WIRE_DTYPES}")
        buf = raw[2 + spec.index]
        dt = np.dtype(spec.dtype)
        n = math.prod(spec.shape) if spec.shape else 1
        if len(memoryview(buf).cast("B")) != n * dt.itemsize:
            raise WireError(f"buffer {spec.name!r}: {len(buf)} bytes, spec says "
                            f"{spec.shape} x {dt.itemsize}")
        a = np.frombuffer(buf, dtype=dt, count=n).reshape(spec.shape)
        a.flags.writeable = False
        arrays[spec.name] = a
    return Packet(header=header, arrays=arrays)


def _check_schema(header: Header) -> None:
    kind = _kind_of(header)
    expected = f"sonoflow.{kind}/{SCHEMA_MAJOR}"
    if header.schema != expected:
        raise WireError(f"unknown schema version {header.schema!r} for a {kind} packet; "
                        f"this build reads {expected!r} (upgrade the older side)")


def _explain_schema(header_bytes, err: Exception) -> None:
    """Turn a validation failure caused by a foreign schema into a clear WireError."""
    try:
        obj = _raw_decoder.decode(header_bytes)
    except msgspec.DecodeError:
        return
    if not isinstance(obj, dict):
        raise WireError(f"header must be a msgpack map, got {type(obj).__name__}") from err
    kind = obj.get("kind")
    if kind not in _HEADER_TYPES:
        raise WireError(f"unknown packet kind {kind!r}; expected one of {KINDS}") from err
    schema = obj.get("schema")
    if isinstance(schema, str) and schema != f"sonoflow.{kind}/{SCHEMA_MAJOR}":
        raise WireError(f"unknown schema version {schema!r} for a {kind} packet; "
                        f"this build reads 'sonoflow.{kind}/{SCHEMA_MAJOR}'") from err


def now_ns() -> int:
    """The clock every stamp uses (monotonic, ns). One host: comparable across processes."""
    return time.monotonic_ns()


def header_to_builtins(header: Header) -> dict:
    """The header as plain dicts and lists (for JSON sinks and ``sonoflow inspect``)."""
    return msgspec.to_builtins(header)
