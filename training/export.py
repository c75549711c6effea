"""ONNX export with the model card embedded (``metadata_props["sonoflow.card"]``) and a
sidecar ``<id>-<precision>.card.json`` carrying the file's sha256."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from sonoflow.models.card import CARD_KEY, ModelCard, file_sha256, sidecar_path


def embed_card(onnx_path: str | Path, card: ModelCard) -> ModelCard:
    """Write ``card`` into the ONNX file's metadata and beside it; return it with its sha256.

    The embedded copy has ``sha256 = ""`` (a file cannot hold its own hash); the sidecar has
    the hash of the final file.
    """
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    card.sha256 = ""
    props = {p.key: p.value for p in model.metadata_props}
    props[CARD_KEY] = card.to_json(indent=None)
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "sonoflow"
    onnx.save(model, str(onnx_path))
    card.sha256 = file_sha256(onnx_path)
    card.save(sidecar_path(onnx_path))
    return card


def export_onnx(model: torch.nn.Module, card: ModelCard, onnx_path: str | Path,
                opset: int = 17) -> ModelCard:
    """Export an eager model (eval mode, batch 1) to ONNX and embed ``card``.

    Output names come from ``model.output_names``; the input name and shape from the card.

    Returns:
        The card with ``sha256`` set.
    """
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dynamic = {card.input.name: {0: "batch"}} if card.input.shape[0] <= 0 else None
    x = torch.zeros([max(1, card.input.shape[0]), *card.input.shape[1:]], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), str(onnx_path), input_names=[card.input.name],
                          output_names=list(model.output_names), opset_version=opset,
                          dynamic_axes=dynamic, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(str(onnx_path))
    return embed_card(onnx_path, card)
