"""Render one clip and write it with its ground truth (used by ``sonoflow simulate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from sonoflow.stream.sim.case import sample_case
from sonoflow.stream.sim.clip import ClipRenderer
from sonoflow.stream.sim.truth import clip_document
from sonoflow.stream.sim.writers import (
    EXTENSIONS,
    DicomWriter,
    Mp4Writer,
    NpzWriter,
    write_truth,
)


def write_clip(out_dir: Path, seed: int, n_frames: int, fmt: str = "mp4", height: int = 480,
               width: int = 640, fps: float = 30.0, ui: bool = True, events: bool = True,
               on_frame: Callable[[], None] | None = None, **overrides) -> tuple[Path, Path, Path]:
    """Simulate ``sim_<seed>`` and write clip, ``.gt.json`` and ``.masks.npz``.

    Args:
        out_dir: existing output folder.
        seed: case seed.
        n_frames: clip length.
        fmt: "mp4", "dicom" or "npz".
        height, width, fps: clip format.
        ui, events: burned-in UI and quality events.
        on_frame: called after each frame (progress bars).
        **overrides: further :func:`sample_case` overrides.

    Returns:
        ``(clip_path, gt_json_path, masks_path)``.

    Raises:
        ConfigError: bad format or case overrides.
        WriteError: a file cannot be written.
    """
    from sonoflow.stream.errors import ConfigError

    if fmt not in EXTENSIONS:
        raise ConfigError(f"format {fmt!r} is unknown; expected one of {sorted(EXTENSIONS)}")
    case = sample_case(seed, ui=ui, events=events, **overrides)
    clip = ClipRenderer(case, n_frames, height, width, fps)
    stem = Path(out_dir) / f"sim_{seed}"
    path = stem.with_suffix(EXTENSIONS[fmt])
    mm = case.mm_per_px(height, width)
    if fmt == "mp4":
        writer = Mp4Writer(path, height, width, fps)
    elif fmt == "npz":
        writer = NpzWriter(path, height, width, fps, mm, seed)
    else:
        ys, xs = np.nonzero(clip.sector_mask)
        region = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        lay = clip.scan.layout
        writer = DicomWriter(path, height, width, fps, mm, region,
                             (lay.origin_x_px, lay.origin_y_px), case)
    frames_truth, ids, tissue, ui_masks = [], [], [], []
    for i in range(n_frames):
        f = clip.frame(i)
        writer.write(f.image)
        frames_truth.append(f.truth)
        ids.append(f.lesion_ids)
        tissue.append(f.tissue)
        ui_masks.append(f.ui_text_mask)
        if on_frame is not None:
            on_frame()
    writer.close()
    doc = clip_document(case, height, width, fps, frames_truth, clip.ui.items if ui else [],
                        clip.ui.ruler if ui else None)
    doc["clip_file"] = path.name
    doc["format"] = fmt
    masks = {"lesion_ids": np.stack(ids), "tissue": np.stack(tissue),
             "ui_text_mask": np.stack(ui_masks), "sector_mask": clip.sector_mask}
    gt, mk = write_truth(stem, doc, masks)
    return path, gt, mk
