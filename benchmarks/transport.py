"""Issue 2's transport benchmark: per-hop latency of a 480x640 frame through inproc (threads),
ipc (processes) and tcp (loopback, CURVE) pass-through stages, against the same stage functions
called in a plain in-process loop.

A thin script over ``sonoflow bench`` (scenario ``benchmarks/scenarios/transport.toml``:
``capture -> hop1 -> hop2 -> hop3 -> sink``, 4 hops). It runs the scenario (or reads records an
earlier run wrote, ``--from``) and writes the per-hop table::

    .venv/bin/python benchmarks/transport.py --out benchmarks/results/bench/transport
    .venv/bin/python benchmarks/transport.py --from benchmarks/results/bench/transport.jsonl \
        --out benchmarks/results/bench/transport

Outputs: ``<out>.jsonl`` (the bench records, when it ran them), ``<out>.hops.json`` and
``<out>.hops.md`` (per transport and pacing: per-hop p50 / p99 in ms, e2e p50 / p99, drops,
extra CPU per hop over the plain loop).

Per hop = (end-to-end latency - time inside the stages) / hops, frame by frame; pooled over
the protocol's runs with the first and last 10 frames of every run left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sonoflow.stream.bench import plots, report, scenario
from sonoflow.stream.bench.protocol import run_scenario

TRANSPORT = {"threads": "inproc (threads)", "processes": "ipc (processes)",
             "tcp": "tcp loopback + CURVE (processes)", "-": "plain function calls"}


def hop_table(records: list[dict]) -> list[dict]:
    """One row per case: transport, pacing, queue depth, per-hop and e2e quantiles (ms)."""
    rows = []
    for r in records:
        if not r["e2e_ms"]["count"]:
            continue
        vs = next(iter(r.get("vs", {}).values()), {}) if r["engine"] == "sonoflow" else {}
        rows.append({
            "case": r["case"], "transport": TRANSPORT.get(r["mode"], r["mode"]),
            "pacing": "fast" if r["pacing"] == "fast" else "30 fps",
            "hwm": r["hwm"] if r["engine"] == "sonoflow" else None,
            "hop_p50_ms": r["hop_ms"]["p50"], "hop_p99_ms": r["hop_ms"]["p99"],
            "e2e_p50_ms": r["e2e_ms"]["p50"], "e2e_p99_ms": r["e2e_ms"]["p99"],
            "throughput_fps": r["throughput_fps"], "drops": r["drops"],
            "frames": r["frames"]["total"],
            "extra_cpu_ms_per_hop": vs.get("cpu_per_frame_minus_ms_per_hop"),
        })
    return rows


def markdown(rows: list[dict], records: list[dict]) -> str:
    r0 = records[0]
    m, p = r0["machine"], r0["protocol"]
    out = [f"Per-hop latency of a 480x640 grey frame, {r0['hops']} hops "
           f"(capture -> 3 pass-through stages -> sink); {p['frames']} frames x {p['runs']} "
           f"runs, first and last {p['skip']} of each run skipped. {m['cpu']}, {m['cores']} "
           f"cores{', ' + m['note'] if m.get('note') else ''}; load average {m['load_avg']} -> "
           f"{m.get('load_avg_end')}. {r0['date']}.\n",
           "| transport | pacing | queue (hwm) | per hop p50 | per hop p99 | e2e p50 | e2e p99 "
           "| frames/s | drops | extra CPU per hop |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v, nd=3):
        return "-" if v is None else f"{v:.{nd}f}"

    for r in rows:
        out.append(f"| {r['transport']} | {r['pacing']} | {r['hwm'] or '-'} | "
                   f"{f(r['hop_p50_ms'])} | {f(r['hop_p99_ms'])} | {f(r['e2e_p50_ms'], 2)} | "
                   f"{f(r['e2e_p99_ms'], 2)} | {f(r['throughput_fps'], 0)} | "
                   f"{r['drops']}/{r['frames']} | {f(r['extra_cpu_ms_per_hop'])} |")
    out.append("\nms. `extra CPU per hop`: CPU time of all processes per frame, minus the plain "
               "loop's, divided by the hops (queueing excluded).\n")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output prefix")
    ap.add_argument("--from", dest="src", type=Path, default=None,
                    help="read these bench records instead of running the scenario")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--machine-note", default="")
    args = ap.parse_args(argv)
    if args.src:
        records = [r for r in report.read_jsonl(args.src) if r["scenario"] == "transport"]
        if not records:
            print(f"{args.src}: no records of the transport scenario", file=sys.stderr)
            return 1
    else:
        scn = scenario.load("transport").with_protocol(args.frames, args.runs)
        records, series = run_scenario(scn, args.out.with_name(args.out.name + ".runs"),
                                       note=args.machine_note,
                                       on_progress=lambda s: print(s, file=sys.stderr))
        report.write_jsonl(args.out.with_suffix(".jsonl"), records)
        plots.plot_all(records, series, args.out)
    rows = hop_table(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".hops.json").write_text(json.dumps(rows, indent=2))
    md = markdown(rows, records)
    args.out.with_name(args.out.name + ".hops.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
