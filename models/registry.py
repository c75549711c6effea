"""Find shipped model artifacts by id and precision.

Artifacts live in ``models/weights/`` (the package's ``weights`` folder) as
``<id>-<precision>.onnx`` with a sidecar card ``<id>-<precision>.card.json``. Extra folders
can be searched by passing ``search=[...]`` (e.g. a training run's ``export/`` folder).
"""

from __future__ import annotations

from pathlib import Path

from sonoflow.models.card import PRECISIONS, ModelCard, read_card
from sonoflow.models.errors import ModelError


def weights_dir() -> Path:
    """The folder of shipped artifacts (``models/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def available(search: list[str | Path] | None = None) -> list[tuple[str, str, Path]]:
    """Every ``(model_id, precision, onnx_path)`` found, sorted.

    Args:
        search: folders to look in; default the shipped ``weights`` folder.
    """
    found = []
    for folder in [Path(p) for p in (search or [weights_dir()])]:
        for path in sorted(folder.glob("*.onnx")):
            model_id, _, precision = path.stem.rpartition("-")
            if model_id and precision in PRECISIONS:
                found.append((model_id, precision, path))
    return sorted(found)


def resolve(model_id: str, precision: str = "fp32",
            search: list[str | Path] | None = None) -> tuple[Path, ModelCard]:
    """The ONNX path and card of ``model_id`` at ``precision``.

    Args:
        model_id: e.g. ``"frame-v1"``.
        precision: ``"fp32"`` | ``"fp16"`` | ``"int8"``.
        search: folders to look in (first match wins); default the shipped folder.

    Returns:
        ``(onnx_path, card)``; the card's id and precision are checked against the request
        and its sha256 against the file.

    Raises:
        ModelError: not found (the message lists what exists), or the card disagrees.
    """
    folders = [Path(p) for p in (search or [weights_dir()])]
    name = f"{model_id}-{precision}.onnx"
    for folder in folders:
        path = folder / name
        if path.exists():
            card = read_card(path)
            if (card.id, card.precision) != (model_id, precision):
                raise ModelError(f"{path}: card says {card.id}-{card.precision}, the file name "
                                 f"says {model_id}-{precision}; re-export the artifact")
            return path, card
    have = [f"{m}-{p}" for m, p, _ in available(folders)]
    raise ModelError(f"model {model_id!r} at precision {precision!r} not found (looked for "
                     f"{name} in {[str(f) for f in folders]}); available: {have or 'none'}. "
                     f"Build the shipped models with tools/build_models.sh")
