"""PNG plots of benchmark results: latency CDF per scenario, per-stage stacked bars, latency
vs number of streams. matplotlib with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.stream.errors import SonoflowError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subtitle(rec: dict[str, Any]) -> str:
    import textwrap

    m, p = rec["machine"], rec["protocol"]
    text = (f"{p['frames']} frames x {p['runs']} runs, skip {p['skip']} at each end; "
            f"{m['cpu']} ({m['cores']} cores){', ' + m['note'] if m.get('note') else ''}; "
            f"{rec['date'][:10]}")
    return textwrap.fill(text, 130)  # a long machine note wraps instead of running off


def _save(fig, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise SonoflowError(f"{path}: cannot write the plot: {e}") from e
    finally:
        _plt().close(fig)
    return path


def cdf(records: list[dict[str, Any]], series: dict[str, np.ndarray], path: Path) -> Path | None:
    """Empirical CDF of end-to-end latency, one line per case (log x axis)."""
    curves = [(r["case"], np.sort(series[r["case"]])) for r in records
              if r["case"] in series and series[r["case"]].size]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cmap = plt.get_cmap("tab20")
    for i, (label, x) in enumerate(curves):
        y = np.arange(1, x.size + 1) / x.size
        # 20 colours, then the same colours dashed: no two curves look alike
        ax.step(x, y, where="post", color=cmap(i % 20), ls="-" if i < 20 else "--",
                label=f"{label} (p50 {np.percentile(x, 50):.2f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, capture to sink (ms, log scale)")
    ax.set_ylabel("fraction of frames")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{records[0]['scenario']}: end-to-end latency CDF\n{_subtitle(records[0])}",
                 fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def stage_bars(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Per-case stacked bars of the mean time in each stage plus the engine's overhead (ms)."""
    recs = [r for r in records if r["e2e_ms"]["count"]]
    if not recs:
        return None
    stages = []
    for r in recs:
        for s in r["stages_ms"]:
            if s != "capture" and s not in stages:
                stages.append(s)
    parts = [*stages, "overhead (transport, queues)"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(recs) + 3), 4.8))
    bottom = np.zeros(len(recs))
    cmap = plt.get_cmap("tab20")
    for i, part in enumerate(parts):
        vals = np.array([(r["overhead_ms"]["avg"] if part == parts[-1] else
                          r["stages_ms"].get(part, {}).get("avg")) or 0.0 for r in recs])
        # a stage skipped on some frames (key-frame policy) averages over the frames it ran on
        ax.bar(range(len(recs)), vals, bottom=bottom, label=part, color=cmap(i % 20))
        bottom += vals
    # one case far above the rest (e.g. tcp queues) would flatten every other bar: clip the
    # axis and write the clipped bar's total at the top
    top = None
    if len(bottom) > 1:
        second = np.sort(bottom)[-2]
        if second > 0 and bottom.max() > 5 * second:
            top = 2.5 * second
            ax.set_ylim(0, top)
    for i, total in enumerate(bottom):
        clipped = top is not None and total > top
        ax.text(i, min(total, top) if clipped else total,
                f"{total:.2f} (clipped)" if clipped else f"{total:.2f}",
                ha="center", va="top" if clipped else "bottom", fontsize=7)
    ax.set_xticks(range(len(recs)))
    ax.set_xticklabels([r["case"] for r in recs], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("mean time per frame (ms)")
    ax.legend(fontsize=7)
    ax.set_title(f"{recs[0]['scenario']}: where the time goes\n{_subtitle(recs[0])}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def vs_streams(records: list[dict[str, Any]], path: Path) -> Path | None:
    """End-to-end p50 / p99 against the number of streams, one pair of lines per setting;
    None when the scenario does not vary the stream count."""
    recs = [r for r in records if r["e2e_ms"]["count"] and r["engine"] == "sonoflow"]
    if len({r["streams"] for r in recs}) < 2:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(f"{r['mode']} {r['pacing']}", []).append(r)
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["streams"])
        n = [r["streams"] for r in rs]
        line = ax.plot(n, [r["e2e_ms"]["p50"] for r in rs], marker="o", label=f"{name} p50")[0]
        ax.plot(n, [r["e2e_ms"]["p99"] for r in rs], marker="s", ls="--",
                color=line.get_color(), label=f"{name} p99")
        ax2.plot(n, [r["throughput_fps"] or 0 for r in rs], marker="o", label=name)
    ticks = sorted({r["streams"] for r in recs})
    for a in (ax, ax2):
        a.set_xticks(ticks)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax2.set_xlabel("concurrent streams")
    ax2.set_ylabel("throughput, all streams (frames/s)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(f"{recs[0]['scenario']}: latency and throughput vs streams\n"
                 f"{_subtitle(recs[0])}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_all(records: list[dict[str, Any]], series: dict[str, np.ndarray],
             prefix: Path) -> list[Path]:
    """Every plot that applies to ``records`` (one scenario), named ``<prefix>.<kind>.png``."""
    made = [cdf(records, series, prefix.with_name(prefix.name + ".cdf.png")),
            stage_bars(records, prefix.with_name(prefix.name + ".stages.png")),
            vs_streams(records, prefix.with_name(prefix.name + ".streams.png"))]
    return [p for p in made if p is not None]


def save_series(series: dict[str, np.ndarray], path: Path) -> Path:
    """Keep the pooled per-frame e2e latencies (ms) beside the records, so the plots can be
    drawn again from files (``sonoflow bench --from``).

    Raises:
        SonoflowError: the file cannot be written.
    """
    labels = list(series)
    try:
        np.savez_compressed(path, labels=np.asarray(labels, dtype=np.str_),
                            **{f"case_{i}": series[k] for i, k in enumerate(labels)})
    except OSError as e:
        raise SonoflowError(f"{path}: cannot write the latency series: {e}") from e
    return path


def load_series(path: Path) -> dict[str, np.ndarray]:
    """Read :func:`save_series`' file; ``{}`` when there is none.

    Raises:
        SonoflowError: the file exists but is unreadable.
    """
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {str(k): z[f"case_{i}"] for i, k in enumerate(z["labels"])}
    except (OSError, ValueError, KeyError) as e:
        raise SonoflowError(f"{path}: unreadable latency series ({e})") from e
