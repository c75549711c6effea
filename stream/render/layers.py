"""The overlay layers. Each draws, in place, on the renderer's own RGB copy of the frame.

Layers (the words used in config, CLI and the window's key help):

* ``masks``   - lesion outlines traced from ``arrays["lesion_mask"]`` (outlines, never filled,
  so the lesion's echotexture stays visible);
* ``boxes``   - lesion boxes coloured by class: full boxes when there is no mask, corner
  brackets when the outline already shows the margin;
* ``labels``  - track id, class and confidence, then the top feature labels and malignancy;
* ``liver``   - the liver outline from ``arrays["liver_mask"]`` (off by default);
* ``quality`` - the quality bar, with the reason when the frame was not analysed;
* ``hud``     - frame number, fps, end-to-end latency, drops, slowest stage;
* ``case``    - lesions found so far (id, class, long axis in mm) and the LI-RADS category.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.stream.messages import Detection, FrameHeader
from sonoflow.stream.render.palette import (
    LIVER_COLOUR,
    ORANGE,
    VERMILLION,
    WHITE,
    class_colour,
    quality_colour,
)
from sonoflow.stream.render.style import CHIP_KEEP, Line, Style, draw_text_block, text_block_size

#: ``InferResult.backend`` of oracle frames built from simulator truth (render.truth_frames)
TRUTH_BACKEND = "simulator-truth"
#: a feature label is shown when its probability reaches this, at most ``MAX_FEATURES`` of them
FEATURE_MIN_PROB = 0.5
MAX_FEATURES = 2
#: malignancy is printed under a lesion from this probability on (below it, the class and its
#: colour say enough, and a column of "malig 0.01" is clutter)
MALIGNANCY_MIN_SHOWN = 0.25
#: short display names of the feature labels (a label chip must not hide the anatomy)
FEATURE_TEXT = {"anechoic": "anechoic", "hyperechoic": "hyperechoic",
                "hypoechoic": "hypoechoic", "halo_target": "target/halo",
                "posterior_enhancement": "post. enhancement", "mosaic": "mosaic",
                "well_defined": "well-defined"}
#: rows in the case panel before "+N more"
MAX_CASE_ROWS = 5
#: corner bracket length as a fraction of the box's shorter side
BRACKET_FRACTION = 0.3
#: margin around a detection box searched for its mask pixels, as a fraction of the box size
MASK_MARGIN_FRACTION = 0.25
LIGHT_GREY = (200, 200, 200)


@dataclass(frozen=True)
class HudStats:
    """Stream-level numbers the HUD shows that one header cannot know.

    Attributes:
        now_ns: ``time.monotonic_ns()`` at render time (e2e latency = now_ns - capture_ns).
        fps: frames per second arriving at the renderer, None until known.
        drops: frames lost so far (gaps in ``seq``).
    """

    now_ns: int
    fps: float | None = None
    drops: int = 0


def _clip_box(xyxy_px, h: int, w: int) -> tuple[int, int, int, int]:
    """``xyxy_px`` rounded to ints and clipped inside an ``h`` x ``w`` image."""
    x0, y0 = int(round(xyxy_px[0])), int(round(xyxy_px[1]))
    x1, y1 = int(round(xyxy_px[2])), int(round(xyxy_px[3]))
    return (max(0, min(w - 1, x0)), max(0, min(h - 1, y0)),
            max(0, min(w - 1, x1)), max(0, min(h - 1, y1)))


def draw_masks(img: np.ndarray, detections: list[Detection], lesion_mask: np.ndarray,
               style: Style) -> None:
    """Trace each detection's mask outline (pixels equal to its ``mask_id``) in its class colour.

    Args:
        img: uint8 HxWx3 RGB, drawn on in place.
        detections: the frame's detections; those without ``mask_id`` are skipped.
        lesion_mask: uint8 HxW, pixel value = ``mask_id``, 0 background, same HxW as ``img``.
        style: sizes for this frame.
    """
    h, w = lesion_mask.shape[:2]
    for det in detections:
        if det.mask_id is None or det.mask_id <= 0:
            continue
        x0, y0, x1, y1 = _clip_box(det.xyxy_px, h, w)
        mx = int((x1 - x0) * MASK_MARGIN_FRACTION) + 2
        my = int((y1 - y0) * MASK_MARGIN_FRACTION) + 2
        x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx + 1), min(h, y1 + my + 1)
        roi = (lesion_mask[y0:y1, x0:x1] == det.mask_id).astype(np.uint8)
        # TC89 keeps the outline's shape with fewer vertices; polylines is ~2x cheaper than
        # drawContours for the same anti-aliased stroke
        contours, _ = cv2.findContours(roi, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_TC89_L1,
                                       offset=(x0, y0))
        if contours:
            cv2.polylines(img, contours, True, class_colour(det.label), style.line_px,
                          cv2.LINE_AA)


def draw_liver(img: np.ndarray, liver_mask: np.ndarray, style: Style) -> None:
    """Trace the liver outline (``liver_mask`` uint8 HxW, nonzero = liver) with a thin line."""
    contours, _ = cv2.findContours((liver_mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_TC89_L1)
    if contours:
        cv2.polylines(img, contours, True, LIVER_COLOUR, max(1, style.line_px // 2), cv2.LINE_AA)


def draw_boxes(img: np.ndarray, detections: list[Detection], has_mask: bool,
               style: Style) -> None:
    """Draw a box per detection: corner brackets when its outline is drawn, else a full box."""
    h, w = img.shape[:2]
    for det in detections:
        colour = class_colour(det.label)
        x0, y0, x1, y1 = _clip_box(det.xyxy_px, h, w)
        if has_mask and det.mask_id:
            n = max(3, int(min(x1 - x0, y1 - y0) * BRACKET_FRACTION))
            for (cx, cy, dx, dy) in ((x0, y0, 1, 1), (x1, y0, -1, 1), (x0, y1, 1, -1),
                                     (x1, y1, -1, -1)):
                cv2.line(img, (cx, cy), (cx + dx * n, cy), colour, style.line_px, cv2.LINE_AA)
                cv2.line(img, (cx, cy), (cx, cy + dy * n), colour, style.line_px, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, style.line_px, cv2.LINE_AA)


def detection_lines(det: Detection) -> list[Line]:
    """The text shown next to one detection: id, class, confidence; then up to
    :data:`MAX_FEATURES` feature labels and the malignancy when it reaches
    :data:`MALIGNANCY_MIN_SHOWN`."""
    ident = f"#{det.track_id} " if det.track_id is not None else ""
    lines = [Line(f"{ident}{det.label} {det.confidence:.2f}", class_colour(det.label))]
    feats = sorted(((-p, f) for f, p in det.features.items() if p >= FEATURE_MIN_PROB))
    extra = [FEATURE_TEXT.get(f, f.replace("_", " ")) for _, f in feats[:MAX_FEATURES]]
    if det.malignancy is not None and det.malignancy >= MALIGNANCY_MIN_SHOWN:
        extra.append(f"malig {det.malignancy:.2f}")
    if extra:
        lines.append(Line(", ".join(extra), LIGHT_GREY, small=True))
    return lines


Rect = tuple[int, int, int, int]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _overlap_area(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def draw_labels(img: np.ndarray, detections: list[Detection], style: Style,
                occupied: list[Rect] | None = None) -> list[Rect]:
    """Put each detection's text chip next to its box without covering other chips or boxes.

    Tries above the box (left- then right-aligned), right, left, then below (where posterior
    enhancement or shadowing would be hidden), and takes the first
    place inside the image that overlaps neither ``occupied`` (e.g. the HUD panels), nor another
    detection's box, nor a chip already placed; when none is free, the place with the least
    overlap.

    Returns:
        The chips drawn, as ``(x0, y0, x1, y1)`` in px.
    """
    h, w = img.shape[:2]
    gap = style.line_px + 1
    boxes = [_clip_box(d.xyxy_px, h, w) for d in detections]
    taken: list[Rect] = list(occupied or [])
    chips: list[Rect] = []
    for i, det in enumerate(detections):
        x0, y0, x1, y1 = boxes[i]
        lines = detection_lines(det)
        cw, ch = text_block_size(lines, style)
        # below the lesion comes last: that is where posterior enhancement or shadowing shows
        candidates = [(x0, y0 - gap - ch), (x1 - cw, y0 - gap - ch), (x1 + gap, y0),
                      (x0 - gap - cw, y0), (x0, y1 + gap), (x1 - cw, y1 + gap)]
        obstacles = taken + [b for j, b in enumerate(boxes) if j != i]
        best, best_cost = candidates[0], None
        for cx, cy in candidates:
            rect = (cx, cy, cx + cw, cy + ch)
            outside = cx < 0 or cy < 0 or rect[2] > w or rect[3] > h
            cost = sum(_overlap_area(rect, o) for o in obstacles) + (10**9 if outside else 0)
            if best_cost is None or cost < best_cost:
                best, best_cost = (cx, cy), cost
            if cost == 0:
                break
        place = best
        chip = draw_text_block(img, lines, place[0], place[1], style, size=(cw, ch))
        taken.append(chip)
        chips.append(chip)
    return chips


def _flags_text(flags: list[str]) -> str:
    return ", ".join(f.replace("_", " ") for f in flags)


def quality_lines(header: FrameHeader) -> tuple[float | None, list[Line]]:
    """The quality score (None when unknown) and the text lines of the quality layer."""
    q = header.quality
    lines: list[Line] = []
    score = None if q is None else float(q.score)
    if q is not None:
        lines.append(Line(f"quality {q.score:.2f}", quality_colour(q.score)))
    if header.status == "failed":
        lines.append(Line(f"FAILED: {header.error or 'unknown error'}", VERMILLION))
    elif header.status == "dropped":
        pass  # skipped by the key-frame policy (every N): routine, not worth a flashing line
    elif header.status == "rejected" or (q is not None and not q.keyframe):
        reason = (q.reason if q is not None and q.reason else
                  _flags_text(q.flags) if q is not None and q.flags else "quality")
        word = "REJECTED" if header.status == "rejected" else "not analysed"
        lines.append(Line(f"{word}: {reason}", VERMILLION if word == "REJECTED" else ORANGE))
    elif q is not None and q.flags:
        lines.append(Line(_flags_text(q.flags), ORANGE, small=True))
    return score, lines


def draw_quality(img: np.ndarray, header: FrameHeader, style: Style,
                 origin_px: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int] | None:
    """Draw the quality bar and its text at the top-left; returns the area used, or None."""
    score, lines = quality_lines(header)
    if not lines:
        return None
    x0, y0 = origin_px
    cw, ch = text_block_size(lines, style)
    bar_w = max(cw, int(120 * style.scale))
    bar_h = max(4, int(8 * style.scale))
    box = draw_text_block(img, lines, x0, y0, style, size=(bar_w, ch))
    if score is not None:
        bx0, by0 = box[0] + style.pad_px, box[3]
        bx1 = box[0] + bar_w - style.pad_px
        by1 = by0 + bar_h
        roi = img[by0:by1 + style.pad_px, box[0]:box[0] + bar_w]
        roi[:] = cv2.convertScaleAbs(roi, alpha=CHIP_KEEP)
        filled = bx0 + int(round((bx1 - bx0) * min(1.0, max(0.0, score))))
        cv2.rectangle(img, (bx0, by0), (bx1, by1), (90, 90, 90), -1)
        if filled > bx0:
            cv2.rectangle(img, (bx0, by0), (filled, by1), quality_colour(score), -1)
        return (box[0], box[1], box[0] + bar_w, by1 + style.pad_px)
    return box


def hud_lines(header: FrameHeader, stats: HudStats | None) -> list[Line]:
    """Frame number, fps, e2e latency (ms), drops and the slowest stage of this frame."""
    first = f"frame {header.frame_index}"
    if stats is not None and stats.fps is not None:
        first += f"  {stats.fps:.1f} fps"
    lines = [Line(first, WHITE, small=True)]
    if stats is not None:
        e2e_ms = (stats.now_ns - header.capture_ns) / 1e6
        lines.append(Line(f"e2e {e2e_ms:.1f} ms  drops {stats.drops}", WHITE, small=True))
    timed = [s for s in header.stamps if s.t_out_ns > s.t_in_ns]  # capture stamps an instant
    if timed:
        slow = max(timed, key=lambda s: s.t_out_ns - s.t_in_ns)
        lines.append(Line(f"slowest {slow.stage} {(slow.t_out_ns - slow.t_in_ns) / 1e6:.1f} ms",
                          LIGHT_GREY, small=True))
    if header.infer is not None and header.infer.backend == TRUTH_BACKEND:
        lines.append(Line("ground truth (simulator)", ORANGE, small=True))
    elif header.infer is not None and header.infer.models:
        lines.append(Line("models: synthetic-trained", ORANGE, small=True))
    return lines


def lirads_text(header: FrameHeader) -> str | None:
    """The running LI-RADS category in ``header.extra["lirads"]`` (a string, or the aggregator's
    ``{"category", "provisional"}``), with "prov." appended when provisional; "pending" while
    the aggregator abstains (category None); None when there is no LI-RADS information."""
    value = header.extra.get("lirads")
    provisional = False
    if isinstance(value, dict):
        provisional = bool(value.get("provisional"))
        value = value.get("category")
        if value is None:
            return "pending"
    if value is None:
        return None
    return f"{value} prov." if provisional else str(value)


def _argmax(probs: dict[str, float]) -> str | None:
    return max(probs, key=probs.get) if probs else None


def case_lines(header: FrameHeader) -> list[Line]:
    """LI-RADS category, lesion count and one row per confirmed lesion (long axis in mm)."""
    lesions = [les for les in header.lesions if les.confirmed]
    category = lirads_text(header)
    if not lesions and category is None and header.infer is None:
        return []
    lines = [Line(f"LI-RADS {category or '--'}   lesions {len(lesions)}", WHITE)]
    for les in lesions[:MAX_CASE_ROWS]:
        size = "size n/a" if les.long_axis_mm is None else f"{les.long_axis_mm:.0f} mm"
        lines.append(Line(f"#{les.lesion_id} {les.label} {size}", class_colour(les.label),
                          small=True))
    if len(lesions) > MAX_CASE_ROWS:
        lines.append(Line(f"+{len(lesions) - MAX_CASE_ROWS} more", LIGHT_GREY, small=True))
    if header.infer is not None:
        grades = [g for g in (_argmax(header.infer.steatosis_probs),
                              _argmax(header.infer.fibrosis_probs)) if g]
        if grades:
            lines.append(Line("est. " + " ".join(grades), LIGHT_GREY, small=True))
    return lines
