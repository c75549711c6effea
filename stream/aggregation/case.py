"""Lesion -> case: malignancy risk, diffuse grades, frame counts, model provenance, case.json.

The case document follows DESIGN.md "Output contracts" (``"schema": "sonoflow.case/1"``);
every field is described in ``docs/outputs.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sonoflow.stream.aggregation.errors import AggregationError
from sonoflow.stream.aggregation.pooling import log_odds_pool
from sonoflow.stream.messages import LesionSummary

CASE_SCHEMA = "sonoflow.case/1"
STEATOSIS_GRADES = ("S0", "S1", "S2", "S3")
FIBROSIS_STAGES = ("F0", "F1", "F2", "F3", "F4")
FRAME_STATUSES = ("analysed", "rejected", "dropped", "failed")
SYNTHETIC_STATEMENT = (
    "The models behind these results were trained only on synthetic images from the SonoFlow "
    "simulator. Their outputs are not validated on patients and are not a diagnosis.")


def noisy_or(probabilities: Iterable[float]) -> float:
    """Probability that at least one of independent events happens: ``1 - prod(1 - p)``.

    Args:
        probabilities: per-lesion malignancy probabilities in [0, 1].

    Returns:
        The case-level malignancy risk (0.0 for no lesion).
    """
    p = np.clip(np.fromiter(probabilities, dtype=np.float64), 0.0, 1.0)
    return float(1.0 - np.prod(1.0 - p)) if p.size else 0.0


def pool_diffuse(frame_probs: Sequence[Mapping[str, float]], qualities: Sequence[float],
                 names: Sequence[str]) -> dict | None:
    """Pool per-frame diffuse-disease probabilities (steatosis or fibrosis) over frames.

    A quality-weighted logarithmic opinion pool over the frames given (the caller passes the
    good-quality analysed frames).

    Args:
        frame_probs: per frame, grade name -> probability (empty dicts are skipped).
        qualities: per frame quality score (the weights).
        names: the grade names in order, e.g. :data:`STEATOSIS_GRADES`.

    Returns:
        ``{"grade": name, "probs": {name: p}, "frames": n, "estimated": True}`` or None when no
        frame carried probabilities.

    Raises:
        AggregationError: the two sequences differ in length.
    """
    if len(frame_probs) != len(qualities):
        raise AggregationError(f"pool_diffuse: {len(frame_probs)} probability dicts but "
                               f"{len(qualities)} quality scores; pass one per frame")
    rows, weights = [], []
    for probs, q in zip(frame_probs, qualities, strict=True):
        if probs:
            rows.append([float(probs.get(n, 0.0)) for n in names])
            weights.append(max(float(q), 1e-3))
    if not rows:
        return None
    pooled = log_odds_pool(np.array(rows), np.array(weights))
    return {"grade": names[int(np.argmax(pooled))],
            "probs": {n: round(float(p), 4) for n, p in zip(names, pooled, strict=True)},
            "frames": len(rows), "estimated": True}


def frame_counts(statuses: Iterable[str], seqs: Iterable[int], last_seq: int | None = None,
                 first_seq: int = 0) -> dict[str, int]:
    """Account for every captured frame: analysed, rejected, dropped, failed.

    Frames that never arrived (gaps in ``seq``, and a tail gap up to the end-of-stream's
    ``last_seq``) were lost between capture and this point: dropped by an edge policy, or
    failed in a stage (the runner drops a packet whose stage raised). From here the two cannot
    be told apart, so gaps count as "dropped"; the sink, which sees the error events, writes
    the authoritative counts over this block. A frame that arrives still "pending" (no stage
    decided its fate) counts as "failed".

    Args:
        statuses: the ``header.status`` of every frame seen.
        seqs: the ``header.seq`` of every frame seen (any order; duplicates ignored).
        last_seq: the last seq the source sent (``EosHeader.last_seq``), if known.
        first_seq: the first seq the source sends (0).

    Returns:
        ``{"total", "analysed", "rejected", "dropped", "failed"}``; the four counts sum to
        ``total``.
    """
    counts = Counter(s if s in FRAME_STATUSES else "failed" for s in statuses)
    seen = set(seqs)
    ends = [*seen, *([last_seq] if last_seq is not None else [])]
    end = max(ends) if ends else first_seq - 1
    total = end - first_seq + 1
    out = {k: int(counts.get(k, 0)) for k in FRAME_STATUSES}
    out["dropped"] += max(total - len(seen), 0)
    return {"total": sum(out.values()), **out}


def model_provenance(models: Mapping[str, str], precision: str,
                     search: list[Path] | None = None) -> tuple[list[dict], bool | None]:
    """Full model ids and hashes for case.json, and whether they are synthetic-only.

    ``InferResult.models`` carries ``id -> sha256[:12]``; the full digest and the training-data
    flag come from the model's card through ``sonoflow.models.registry``. A model whose card
    cannot be found keeps its short hash and leaves the flag unknown.

    Args:
        models: model id -> (short) sha256, as seen in the frames.
        precision: the precision the frames were run at (``InferResult.precision``).
        search: folders holding the artifacts; default the shipped ``models/weights``.

    Returns:
        ``([{"id", "sha256", "precision", "synthetic_only"}...], synthetic)`` where ``synthetic``
        is True if any card says synthetic-only, False if all cards say otherwise, None if no
        card was found.
    """
    from sonoflow.models.card import PRECISIONS
    from sonoflow.models.errors import ModelError
    from sonoflow.models.registry import resolve

    out, flags = [], []
    for model_id, short in sorted(models.items()):
        entry = {"id": model_id, "sha256": short, "precision": None, "synthetic_only": None}
        # the frame network and the classifier may run at different precisions: take the
        # card whose file hash matches the one the frames carried
        tried = [precision] if precision in PRECISIONS else []
        for prec in [*tried, *(p for p in PRECISIONS if p not in tried)]:
            try:
                _, card = resolve(model_id, prec, search)
            except ModelError:
                continue  # not shipped at this precision (or a training run's export)
            if card.sha256 and card.sha256.startswith(short):
                entry.update(sha256=card.sha256, precision=card.precision,
                             synthetic_only=bool(card.synthetic_only))
                flags.append(bool(card.synthetic_only))
                break
        out.append(entry)
    synthetic = any(flags) if flags else None
    return out, synthetic


def lesion_json(lesion: LesionSummary) -> dict:
    """One entry of case.json ``lesions`` (``label`` is written as ``class``)."""
    return {"lesion_id": lesion.lesion_id, "first_frame": lesion.first_frame,
            "last_frame": lesion.last_frame, "best_frame": lesion.best_frame,
            "xyxy_px": list(lesion.xyxy_px), "long_axis_mm": lesion.long_axis_mm,
            "short_axis_mm": lesion.short_axis_mm, "class": lesion.label,
            "class_probs": dict(lesion.class_probs), "malignancy": lesion.malignancy,
            "features": dict(lesion.features), "n_frames": lesion.n_frames}
