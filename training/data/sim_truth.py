"""Load simulator ground truth (``<clip>.gt.json`` + ``<clip>.masks.npz``).

The format (``"schema": "sonoflow.sim/1"``) is documented in docs/simulator.md.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.stream.errors import SonoflowError

SCHEMA_PREFIX = "sonoflow.sim/"
SUPPORTED_SCHEMAS = ("sonoflow.sim/1",)
MASK_KEYS = ("lesion_ids", "tissue", "ui_text_mask", "sector_mask")


class TruthError(SonoflowError):
    """A ground-truth file is missing, unreadable or of an unsupported schema."""


def load_truth(gt_json_path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a clip's ground truth and its masks.

    Args:
        gt_json_path: the ``<clip>.gt.json`` file; the masks file is named in its
            ``masks_file`` key (default ``<clip>.masks.npz`` beside it).

    Returns:
        ``(truth, masks)``: the JSON document, and ``lesion_ids`` ``(N, H, W)`` uint8,
        ``tissue`` ``(N, H, W)`` uint8, ``ui_text_mask`` ``(N, H, W)`` bool,
        ``sector_mask`` ``(H, W)`` bool.

    Raises:
        TruthError: missing/corrupt files, unsupported schema, or masks whose shape does not
            match the document.
    """
    path = Path(gt_json_path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TruthError(f"{path}: cannot read ground truth JSON ({e})") from e
    schema = doc.get("schema")
    if schema not in SUPPORTED_SCHEMAS:
        raise TruthError(f"{path}: schema {schema!r} is not supported; expected one of "
                         f"{list(SUPPORTED_SCHEMAS)} (regenerate with `sonoflow simulate`)")
    name = doc.get("masks_file") or path.name.replace(".gt.json", ".masks.npz")
    mpath = path.with_name(name)
    try:
        with np.load(mpath, allow_pickle=False) as z:
            masks = {k: z[k] for k in MASK_KEYS if k in z.files}
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise TruthError(f"{mpath}: cannot read the masks file ({e})") from e
    missing = [k for k in MASK_KEYS if k not in masks]
    if missing:
        raise TruthError(f"{mpath}: masks {missing} missing; expected {list(MASK_KEYS)}")
    n, h, w = doc["n_frames"], doc["height"], doc["width"]
    for k in ("lesion_ids", "tissue", "ui_text_mask"):
        if masks[k].shape != (n, h, w):
            raise TruthError(f"{mpath}: {k} has shape {masks[k].shape}; expected {(n, h, w)} "
                             "from the JSON")
    if masks["sector_mask"].shape != (h, w):
        raise TruthError(f"{mpath}: sector_mask has shape {masks['sector_mask'].shape}; "
                         f"expected {(h, w)}")
    return doc, masks
