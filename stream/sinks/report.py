"""Case outputs: ``case.json`` and a self-contained ``report.html``.

The report inlines every picture as a base64 PNG (no external file, no network): key-frame
thumbnails with the lesion outline, and a timeline plot of frame quality, detections per frame
and frame status drawn with matplotlib from ``frames.jsonl``. Every field is described in
``docs/outputs.md``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sonoflow.stream.errors import StageError
from sonoflow.stream.messages import CaseHeader, Packet

STATUS_COLOURS = {  # Okabe-Ito
    "analysed": "#009E73", "rejected": "#E69F00", "dropped": "#999999", "failed": "#D55E00",
    "pending": "#56B4E9",
}


def write_case_outputs(out_dir: Path, case_packet: Packet, frames_jsonl: Path | None
                       ) -> list[Path]:
    """Write ``case.json`` and ``report.html`` for one stream.

    Args:
        out_dir: folder to write into (created if missing).
        case_packet: the aggregator's ``case`` packet: ``CaseHeader.case`` is the case.json
            document; arrays ``thumb_<lesion_id>`` are ``(S, S, 3)`` uint8 RGB thumbnails.
        frames_jsonl: the stream's ``frames.jsonl`` for the timeline plot, or None (the report
            then says no timeline is available).

    Returns:
        ``[case.json path, report.html path]``.

    Raises:
        StageError: the packet is not a case packet, or ``frames_jsonl`` is unreadable.
    """
    header = case_packet.header
    if not isinstance(header, CaseHeader):
        raise StageError(f"write_case_outputs needs a 'case' packet, got {case_packet.kind!r}; "
                         f"pass the packet AggregateStage.flush returns")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    case = header.case
    case_path = out_dir / "case.json"
    case_path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
    frames = read_frames_jsonl(frames_jsonl) if frames_jsonl is not None else None
    report_path = out_dir / "report.html"
    report_path.write_text(render_report(case, case_packet.arrays, frames), encoding="utf-8")
    return [case_path, report_path]


def read_frames_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``frames.jsonl`` file.

    Raises:
        StageError: the file is missing or a line is not JSON (names the line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise StageError(f"{path}: cannot read frames.jsonl for the report timeline ({e}); "
                         f"pass frames_jsonl=None to write the report without it") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise StageError(f"{path}:{n}: not a JSON object ({e}); expected one frame "
                             f"record per line") from e
    return out


# --- pictures --------------------------------------------------------------------------------

def png_data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an ``(H, W, 3)`` RGB or ``(H, W)`` uint8 image.

    Raises:
        StageError: OpenCV could not encode the array (wrong dtype or shape).
    """
    a = np.ascontiguousarray(rgb)
    bgr = cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise StageError(f"PNG encoding failed for an image of shape {a.shape}, dtype {a.dtype}")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def timeline_png(frames: list[dict[str, Any]]) -> bytes:
    """Timeline plot: quality score, detections per frame, and status per frame.

    Args:
        frames: ``frames.jsonl`` records (``frame_index``, ``status``, ``quality``,
            ``detections``).

    Returns:
        PNG bytes (1100 x 420 px).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    # lost frames (seq gaps) have no frame_index: place them by seq
    idx = np.array([_first_not_none(f.get("frame_index"), f.get("seq"), i)
                    for i, f in enumerate(frames)], dtype=float)
    quality = np.array([(f.get("quality") or {}).get("score", np.nan) for f in frames],
                       dtype=float)
    n_det = np.array([len(f.get("detections") or []) for f in frames], dtype=float)
    statuses = [f.get("status", "pending") for f in frames]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 1, height_ratios=[3, 2, 0.6], hspace=0.15)
    ax_q = fig.add_subplot(grid[0])
    ax_d = fig.add_subplot(grid[1], sharex=ax_q)
    ax_s = fig.add_subplot(grid[2], sharex=ax_q)
    ax_q.plot(idx, quality, color="#0072B2", lw=1.2)
    ax_q.set_ylim(0, 1.02)
    ax_q.set_ylabel("quality")
    ax_q.grid(alpha=0.3)
    ax_d.bar(idx, n_det, width=1.0, color="#CC79A7")
    ax_d.set_ylabel("detections")
    ax_d.set_ylim(0, max(float(np.nanmax(n_det)) if n_det.size else 0.0, 1.0) + 0.5)
    ax_d.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_d.grid(alpha=0.3)
    colours = [STATUS_COLOURS.get(s, "#000000") for s in statuses]
    ax_s.bar(idx, np.ones_like(idx), width=1.0, color=colours)
    ax_s.set_yticks([])
    ax_s.set_ylabel("status", rotation=0, ha="right", va="center")
    ax_s.set_xlabel("frame index")
    for ax in (ax_q, ax_d):
        ax.tick_params(labelbottom=False)
    present = [s for s in STATUS_COLOURS if s in statuses]
    ax_q.legend(handles=[Patch(color=STATUS_COLOURS[s], label=s) for s in present],
                loc="lower right", ncol=len(present) or 1, fontsize=8, title="status",
                title_fontsize=8, framealpha=0.8)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.97, bottom=0.12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _first_not_none(*values: Any) -> Any:
    return next(v for v in values if v is not None)


# --- HTML ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(p: float | None) -> str:
    return "n/a" if p is None else f"{100 * float(p):.0f}%"


def _probs_html(probs: dict[str, float], top: int = 3) -> str:
    items = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
    return "<br>".join(f"{_e(k)} {_pct(v)}" for k, v in items)


def _lesion_rows(case: dict[str, Any], thumbs: dict[str, np.ndarray], key: str = "lesions"
                 ) -> str:
    rows = []
    for les in case.get(key, []):
        thumb = thumbs.get(f"thumb_{les['lesion_id']}")
        img = (f'<img class="thumb" alt="lesion {les["lesion_id"]} key frame" '
               f'src="{png_data_uri(thumb)}">' if thumb is not None else "no thumbnail")
        if les.get("long_axis_mm") is not None:
            size = f"{les['long_axis_mm']:.1f} &times; {les['short_axis_mm']:.1f} mm"
        else:
            size = "not measured (uncalibrated)"
        cls_p = (les.get("class_probs") or {}).get(les["class"])
        feats = sorted((les.get("features") or {}).items(), key=lambda kv: -kv[1])
        feat_html = "<br>".join(f"{_e(k)} {_pct(v)}" for k, v in feats if v >= 0.5) or \
            "none above 50%"
        lirads = (case.get("lirads", {}).get("per_lesion") or {}).get(str(les["lesion_id"]), "")
        if key == "mimics":
            lirads = "left out (possible mimic)"
        rows.append(
            f"<tr><td>{img}</td><td class=num>{les['lesion_id']}</td>"
            f"<td>{les['first_frame']}&ndash;{les['last_frame']}<br>"
            f"<small>best {les['best_frame']}, {les.get('n_frames', '?')} frames</small></td>"
            f"<td>{size}</td>"
            f"<td><b>{_e(les['class'])}</b> {_pct(cls_p)}<br><small>"
            f"{_probs_html(les.get('class_probs') or {})}</small></td>"
            f"<td class=num>{_pct(les.get('malignancy'))}</td>"
            f"<td><small>{feat_html}</small></td><td>{_e(lirads)}</td></tr>")
    if not rows:
        return ('<tr><td colspan="8">No lesion was confirmed in this study.</td></tr>'
                if key == "lesions" else "")
    return "\n".join(rows)


def _mimic_note(case: dict[str, Any]) -> str:
    classes = (case.get("aggregation") or {}).get("mimic_classes") or []
    return (f"; tracks pooled to {_e(', '.join(classes))} listed as possible mimics"
            if classes else "")


def _mimics_html(case: dict[str, Any], thumbs: dict[str, np.ndarray]) -> str:
    """The tracks pooled to a mimic class, apart from the lesions (nothing when none)."""
    rows = _lesion_rows(case, thumbs, "mimics")
    if not rows:
        return ""
    classes = ", ".join((case.get("aggregation") or {}).get("mimic_classes") or [])
    return f"""<h2>Possible mimics (not counted as lesions)</h2>
<p class="meta">Tracks whose pooled class is {_e(classes)}: the classifier's class for focal fat
sparing and for non-lesions such as vessel cross-sections. They are left out of the lesion
table, the malignancy risk and the US LI-RADS category; look at them before dismissing them.</p>
<table><thead><tr><th>key frame</th><th>id</th><th>frames</th><th>size (long &times; short)</th>
<th>class (confidence)</th><th>malignancy</th><th>features</th><th>US category</th></tr></thead>
<tbody>
{rows}
</tbody></table>"""


def _diffuse_html(block: dict[str, Any] | None, key: str, title: str) -> str:
    if not block or block.get(key) is None:
        return f"<div class=card><h3>{title}</h3><p>not estimated (no good-quality frame " \
               f"carried grades)</p></div>"
    return (f"<div class=card><h3>{title} <span class=tag>estimated</span></h3>"
            f"<p class=big>{_e(block[key])}</p><p><small>{_probs_html(block['probs'], 5)}"
            f"<br>pooled over {block.get('frames', '?')} good-quality frames</small></p></div>")


def render_report(case: dict[str, Any], thumbs: dict[str, np.ndarray],
                  frames: list[dict[str, Any]] | None) -> str:
    """The report page as one HTML string (pictures inlined).

    Args:
        case: the case.json document.
        thumbs: ``thumb_<lesion_id>`` -> ``(S, S, 3)`` uint8 RGB.
        frames: ``frames.jsonl`` records for the timeline, or None.
    """
    lirads = case.get("lirads", {})
    frames_block = case.get("frames", {})
    cal = case.get("calibration", {})
    quality = case.get("quality", {})
    software = case.get("software", {})
    synthetic = case.get("synthetic_models")
    banner = _e(case.get("synthetic_statement", ""))
    if synthetic:
        banner = ("<b>Models trained on synthetic data only &mdash; not a diagnosis.</b> "
                  + banner)
    else:
        banner = "<b>Research software &mdash; not a diagnosis.</b> " + banner
    if frames:
        timeline = (f'<img class="timeline" alt="timeline of quality, detections and status" '
                    f'src="data:image/png;base64,'
                    f'{base64.b64encode(timeline_png(frames)).decode("ascii")}">')
    else:
        timeline = "<p>No frames.jsonl was given: timeline not available.</p>"
    cal_text = (f"{cal['mm_per_px'][0]:.4f} &times; {cal['mm_per_px'][1]:.4f} mm/px "
                f"(source: {_e(cal.get('source'))})" if cal.get("mm_per_px")
                else f"uncalibrated &mdash; {_e(cal.get('note'))}")
    category = lirads.get("category")
    models_rows = "\n".join(
        f"<tr><td>{_e(m.get('id'))}</td><td><code>{_e(m.get('sha256'))}</code></td>"
        f"<td>{_e(m.get('precision'))}</td><td>{_e(m.get('synthetic_only'))}</td></tr>"
        for m in case.get("models", [])) or '<tr><td colspan="4">no model recorded</td></tr>'
    flags = ", ".join(f"{_e(k)} &times;{v}" for k, v in (quality.get("flags") or {}).items()) \
        or "none"
    counts = " &middot; ".join(f"{k} {frames_block.get(k, 0)}"
                               for k in ("analysed", "rejected", "dropped", "failed"))
    mal = (case.get("malignancy_risk") or {}).get("value")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>SonoFlow case report &mdash; {_e(case.get('source'))}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1150px; padding: 16px; color: #1a1a1a; background: #fafafa; }}
.banner {{ background: #fff3cd; border: 2px solid #E69F00; padding: 12px 16px;
          border-radius: 6px; font-size: 15px; }}
h1 {{ font-size: 24px; margin: 16px 0 4px; }} h2 {{ font-size: 19px; margin-top: 26px; }}
h3 {{ font-size: 15px; margin: 0 0 6px; }}
.meta {{ color: #444; font-size: 14px; }}
.cards {{ display: flex; gap: 12px; flex-wrap: wrap; }}
.card {{ background: white; border: 1px solid #ddd; border-radius: 6px; padding: 12px;
        flex: 1 1 220px; }}
.big {{ font-size: 28px; font-weight: 700; margin: 4px 0; }}
.tag {{ background: #56B4E9; color: white; border-radius: 4px; padding: 1px 6px;
       font-size: 12px; font-weight: 600; }}
table {{ border-collapse: collapse; width: 100%; background: white; font-size: 14px; }}
th, td {{ border: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; }}
th {{ background: #f0f0f0; }} td.num {{ text-align: right; }}
img.thumb {{ width: 140px; height: 140px; image-rendering: auto; display: block; }}
img.timeline {{ width: 100%; background: white; border: 1px solid #ddd; }}
code {{ font-size: 12px; word-break: break-all; }}
</style></head>
<body>
<div class="banner" role="alert">{banner}</div>
<h1>Case report</h1>
<p class="meta">Source: <b>{_e(case.get('source'))}</b> &middot; frames: {frames_block.get('total', 0)}
({counts}) &middot; calibration: {cal_text}</p>

<div class="cards">
<div class="card"><h3>US LI-RADS {_e(lirads.get('version'))}</h3>
<p class="big">{_e(category) if category else 'no category'}</p>
<p>Visualization <b>{_e(lirads.get('visualization'))}</b>
<small>({_e(lirads.get('visualization_reason'))})</small></p>
<p>{_e(lirads.get('recommendation'))}</p><p><small>{_e(lirads.get('reason'))}</small></p></div>
<div class="card"><h3>Malignancy risk</h3><p class="big">{_pct(mal)}</p>
<p><small>noisy-OR over {len(case.get('lesions', []))} lesion(s)</small></p></div>
{_diffuse_html(case.get('steatosis'), 'grade', 'Steatosis')}
{_diffuse_html(case.get('fibrosis'), 'stage', 'Fibrosis')}
</div>

<h2>Lesions</h2>
<table><thead><tr><th>key frame</th><th>id</th><th>frames</th><th>size (long &times; short)</th>
<th>class (confidence)</th><th>malignancy</th><th>features</th><th>US category</th></tr></thead>
<tbody>
{_lesion_rows(case, thumbs)}
</tbody></table>
{_mimics_html(case, thumbs)}

<h2>Quality</h2>
<p>Mean quality score {quality.get('mean_score', 'n/a')} over {quality.get('frames_scored', 0)}
scored frames; {quality.get('good_frames', 0)} good-quality analysed frames (score &ge;
{quality.get('good_threshold', '')}). Flags: {flags}.</p>
{timeline}

<h2>Models and software</h2>
<table><thead><tr><th>model</th><th>sha256</th><th>precision</th><th>synthetic only</th></tr>
</thead><tbody>
{models_rows}
</tbody></table>
<p class="meta">{_e(software.get('name'))} {_e(software.get('version'))} &middot; inference:
{_e((case.get('inference') or {}).get('backend'))}, test-time augmentation
{_e((case.get('inference') or {}).get('tta'))} &middot; aggregation:
{_e((case.get('aggregation') or {}).get('method'))} pooling weighted by
{_e((case.get('aggregation') or {}).get('weights'))}, lesions with at least
{_e((case.get('aggregation') or {}).get('min_track_frames'))} frames of evidence{_mimic_note(case)}.</p>
</body></html>
"""
