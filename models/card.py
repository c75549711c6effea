"""The model card: everything needed to feed a shipped model without guessing.

A card travels with every artifact twice: embedded in the ONNX file's ``metadata_props`` under
:data:`CARD_KEY` (JSON) and as a sidecar ``<id>-<precision>.card.json`` beside it. Both are
written by ``sonoflow export``; :func:`read_card` prefers the sidecar (it carries the file's
sha256) and falls back to the embedded copy, read through onnxruntime (no torch, no onnx).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sonoflow.models.errors import CardError

CARD_KEY = "sonoflow.card"
CARD_SCHEMA = "sonoflow.card/1"
TASKS = ("frame", "lesion_classifier")
PRECISIONS = ("fp32", "fp16", "int8")
LAYOUTS = ("NCHW",)
RESIZES = ("letterbox", "crop")

# Class vocabularies shared by the frame network, the classifier, infer and aggregate.
LESION_TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
MALIGNANT_TYPES = ("metastasis", "hcc")
LESION_FEATURES = ("anechoic", "hyperechoic", "hypoechoic", "halo_target",
                   "posterior_enhancement", "mosaic", "well_defined")
STEATOSIS_GRADES = ("S0", "S1", "S2", "S3")
FIBROSIS_STAGES = ("F0", "F1", "F2", "F3", "F4")


@dataclass
class InputSpec:
    """The input contract of a model.

    Attributes:
        name: ONNX input name.
        shape: e.g. ``[1, 1, 256, 256]``; a leading ``-1`` or ``0`` means a dynamic batch.
        layout: ``"NCHW"``.
        channels: 1 (grey).
        dtype: ``"float32"``.
        normalisation: ``{"scale": 1/255, "mean": m, "std": s}``; the model sees
            ``(pixel_u8 * scale - mean) / std``.
        resize: ``"letterbox"`` (frame network: the sector's box letterboxed into the input,
            pixels outside the sector zeroed) or ``"crop"`` (classifier: box enlarged by
            ``crop_margin`` and resized).
        crop_margin: box enlargement factor for ``resize == "crop"`` (e.g. 1.5), else None.
        pad_value: grey level (uint8) used for letterbox padding and blanked pixels.
    """

    name: str
    shape: list[int]
    layout: str = "NCHW"
    channels: int = 1
    dtype: str = "float32"
    normalisation: dict[str, float] = field(default_factory=lambda: {
        "scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0})
    resize: str = "letterbox"
    crop_margin: float | None = None
    pad_value: int = 0

    @property
    def height(self) -> int:
        return int(self.shape[2])

    @property
    def width(self) -> int:
        return int(self.shape[3])


@dataclass
class ModelCard:
    """Self-description of one shipped model artifact (JSON-serialisable).

    Attributes:
        id: model id, e.g. ``"frame-v1"``; the artifact is ``<id>-<precision>.onnx``.
        task: ``"frame"`` or ``"lesion_classifier"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input: the input contract (:class:`InputSpec`).
        outputs: ONNX output name -> "shape and meaning".
        class_names: head name -> class names in output order.
        thresholds: name -> value (e.g. ``"heatmap": 0.3``), with sources where they come
            from literature.
        pruning_ratio: fraction of prunable channels removed (0.0 = unpruned).
        params: number of parameters.
        gflops: GFLOPs (2 x multiply-accumulates) for one input.
        training: ``{"data": ..., "config_hash": ..., "seeds": ...}`` and anything else useful.
        metrics: held-out metrics (names -> values), measured on seeds never used in training.
        synthetic_only: trained on simulator data only.
        sha256: hex digest of the ONNX file (empty inside the embedded copy, which cannot hold
            the hash of the file that contains it; the sidecar carries it).
        extra: free-form, namespaced by the writer.
    """

    id: str
    task: str
    precision: str
    input: InputSpec
    outputs: dict[str, str]
    class_names: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    pruning_ratio: float = 0.0
    params: int = 0
    gflops: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    synthetic_only: bool = True
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = CARD_SCHEMA

    def __post_init__(self) -> None:
        if isinstance(self.input, dict):
            self.input = InputSpec(**self.input)
        self.validate()

    @property
    def artifact_name(self) -> str:
        """``<id>-<precision>.onnx``."""
        return f"{self.id}-{self.precision}.onnx"

    def validate(self, where: str = "model card") -> None:
        """Check the enumerated fields.

        Raises:
            CardError: a field has a value outside its allowed set (names the field).
        """
        checks = (("task", self.task, TASKS), ("precision", self.precision, PRECISIONS),
                  ("input.layout", self.input.layout, LAYOUTS),
                  ("input.resize", self.input.resize, RESIZES))
        for name, value, allowed in checks:
            if value not in allowed:
                raise CardError(f"{where}: {name} is {value!r}, expected one of {allowed}")
        if self.schema != CARD_SCHEMA:
            raise CardError(f"{where}: schema {self.schema!r}, this build reads {CARD_SCHEMA!r}")
        if len(self.input.shape) != 4:
            raise CardError(f"{where}: input.shape {self.input.shape} is not NCHW (4 dims)")
        if self.input.shape[1] != self.input.channels:
            raise CardError(f"{where}: input.shape {self.input.shape} has "
                            f"{self.input.shape[1]} channels, input.channels says "
                            f"{self.input.channels}")
        if not self.outputs:
            raise CardError(f"{where}: outputs is empty; list every ONNX output")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model card") -> ModelCard:
        """Build a card from plain JSON data.

        Raises:
            CardError: missing or unknown keys, or invalid values (names ``where``).
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise CardError(f"{where}: unknown card key(s) {sorted(unknown)}; known: "
                            f"{sorted(known)} (written by a newer sonoflow?)")
        try:
            card = cls(**data)
        except TypeError as e:
            raise CardError(f"{where}: {e}") from e
        card.validate(where)
        return card

    @classmethod
    def from_json(cls, text: str, where: str = "model card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CardError(f"{where}: not JSON ({e})") from e
        if not isinstance(data, dict):
            raise CardError(f"{where}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, where)

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON to ``path`` and return it."""
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a sidecar card.

        Raises:
            CardError: the file is missing or malformed.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise CardError(f"{path}: cannot read model card ({e.strerror})") from e
        return cls.from_json(text, str(path))


def sidecar_path(onnx_path: str | Path) -> Path:
    """``models/weights/frame-v1-fp32.onnx`` -> ``models/weights/frame-v1-fp32.card.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".card.json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_from_metadata(metadata: dict[str, str], where: str) -> ModelCard:
    """Parse the card embedded in an ONNX ``metadata_props`` map.

    Raises:
        CardError: the key is missing or its JSON is malformed.
    """
    if CARD_KEY not in metadata:
        raise CardError(f"{where}: no {CARD_KEY!r} entry in the ONNX metadata_props (keys: "
                        f"{sorted(metadata)}); re-export it with `sonoflow export`")
    return ModelCard.from_json(metadata[CARD_KEY], f"{where} [{CARD_KEY}]")


def read_card(onnx_path: str | Path) -> ModelCard:
    """The card of an ONNX artifact: the sidecar when present (it carries the file's sha256),
    else the embedded copy (read with onnxruntime, which the runtime install always has).

    Raises:
        CardError: neither copy exists or the one found is malformed; or the sidecar's sha256
            does not match the file.
    """
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if side.exists():
        card = ModelCard.load(side)
        if card.sha256:
            actual = file_sha256(onnx_path)
            if actual != card.sha256:
                raise CardError(f"{side}: sha256 {card.sha256[:12]}... does not match "
                                f"{onnx_path.name} ({actual[:12]}...); the artifact changed "
                                f"after export; re-run the export")
        return card
    from sonoflow.models.runtime.ort import read_metadata  # lazy: onnxruntime is heavy

    meta = read_metadata(onnx_path)
    card = card_from_metadata(meta, str(onnx_path))
    card.sha256 = file_sha256(onnx_path)
    return card
