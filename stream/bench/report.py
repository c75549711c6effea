"""Benchmark records as JSON lines and as a markdown table.

Every record carries the keys DESIGN.md's output contract fixes for ``sonoflow bench --out``:
``scenario``, ``machine``, ``e2e_ms`` (``avg, p50, p95, p99, p999, max``), ``stages_ms``,
``drop_rate``, ``throughput_fps``, ``streams`` - and more (see docs/benchmarking.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sonoflow.stream.errors import SonoflowError


def write_jsonl(path: Path, records: list[dict[str, Any]], append: bool = False) -> None:
    """Write (or append) one JSON object per line.

    Raises:
        SonoflowError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if append else "w") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
    except OSError as e:
        raise SonoflowError(f"{path}: cannot write the benchmark records: {e}") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read records written by :func:`write_jsonl`.

    Raises:
        SonoflowError: missing file or a line that is not JSON.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SonoflowError(f"{path}: cannot read benchmark records: {e}") from e
    out = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SonoflowError(f"{path}:{i + 1}: not a JSON line ({e})") from e
    return out


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(records: list[dict[str, Any]]) -> str:
    """One table per scenario: e2e distribution, overhead and per hop, drops, throughput, CPU;
    then the per-stage p50s, the targets and the ratios against the reference engines."""
    out: list[str] = []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["scenario"], []).append(r)
    for name, recs in by.items():
        r0 = recs[0]
        p = r0["protocol"]
        m = r0["machine"]
        out.append(f"### {name}\n")
        if r0.get("question"):
            out.append(f"{r0['question']}\n")
        out.append(f"Protocol: {p['frames']} frames x {p['runs']} runs, {p['warmup']}. "
                   f"Source `{r0['source']}`; pipeline {' -> '.join(['capture', *r0['pipeline']])}"
                   f". Machine: {m['cpu']}, {m['cores']} cores"
                   f"{', ' + m['note'] if m.get('note') else ''}; load average "
                   f"{m.get('load_avg')} at start, {m.get('load_avg_end')} at end. "
                   f"{r0['date']}, scenario hash `{r0['scenario_hash']}`.\n")
        out.append("| case | e2e avg | p50 | p95 | p99 | p99.9 | max | overhead p50 | per hop "
                   "p50 | per hop p99 | drops | fps | CPU ms/frame |")
        out.append("|---|" + "---:|" * 12)
        for r in recs:
            e, h = r["e2e_ms"], r["hop_ms"]
            if not e["count"]:
                why = r.get("skipped") or "; ".join(r.get("errors", [])[:1]) or "no timed frames"
                out.append(f"| {r['case']} | not measured: {why[:160]} |" + " |" * 11)
                continue
            out.append(
                f"| {r['case']} | {_f(e['avg'])} | {_f(e['p50'])} | {_f(e['p95'])} | "
                f"{_f(e['p99'])} | {_f(e['p999'])} | {_f(e['max'])} | "
                f"{_f(r['overhead_ms']['p50'], 3)} | {_f(h['p50'], 3)} | {_f(h['p99'], 3)} | "
                f"{r['drops']}/{r['frames']['total']} | {_f(r['throughput_fps'], 1)} | "
                f"{_f(r.get('cpu_ms_per_frame'), 3)} |")
        out.append("\nms; `overhead` = e2e minus the time inside the stages; `per hop` = "
                   "overhead / hops; `CPU ms/frame` = CPU time of all the run's processes per "
                   "captured frame.\n")
        stage_names = sorted({k for r in recs for k in r["stages_ms"]},
                             key=lambda k: (k != "capture", k))
        if stage_names:
            out.append("| case | " + " | ".join(f"{s} p50" for s in stage_names) + " |")
            out.append("|---|" + "---:|" * len(stage_names))
            for r in recs:
                if r["e2e_ms"]["count"]:
                    out.append(f"| {r['case']} | " + " | ".join(
                        _f(r["stages_ms"].get(s, {}).get("p50"), 3) for s in stage_names) + " |")
            out.append("")
        checks = [(r["case"], k, c) for r in recs for k, c in r.get("checks", {}).items()]
        if checks:
            out.append("| case | target | limit | measured | met |")
            out.append("|---|---|---:|---:|---|")
            for case, k, c in checks:
                out.append(f"| {case} | {k} | {c['target']} | {_f(c['value'], 4)} | "
                           f"{'yes' if c['pass'] else '**no**'} |")
            out.append("")
        vs = [(r["case"], ref, v) for r in recs if r["engine"] == "sonoflow"
              for ref, v in r.get("vs", {}).items()]
        if vs:
            out.append("| case | against | e2e p50 ratio | overhead p50 ratio | overhead p50 "
                       "difference (ms) | extra CPU per hop (ms/frame) |")
            out.append("|---|---|---:|---:|---:|---:|")
            for case, ref, v in vs:
                out.append(f"| {case} | {ref} | {_f(v['e2e_p50_ratio'], 2)} | "
                           f"{_f(v['overhead_p50_ratio'], 2)} | "
                           f"{_f(v['overhead_p50_minus_ms'], 3)} | "
                           f"{_f(v.get('cpu_per_frame_minus_ms_per_hop'), 3)} |")
            out.append("")
        procs = [(r["case"], n, v) for r in recs for n, v in r.get("processes", {}).items()]
        if procs:
            out.append("<details><summary>CPU and memory per process</summary>\n")
            out.append("| case | process | CPU % of one core | peak RSS MiB |")
            out.append("|---|---|---:|---:|")
            for case, n, v in procs:
                out.append(f"| {case} | {n} | {_f(v['cpu_pct'], 1)} | "
                           f"{_f(v['peak_rss_mib'], 0)} |")
            out.append("\n</details>\n")
    return "\n".join(out) + "\n"
