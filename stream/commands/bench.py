"""`sonoflow bench [SCENARIO...] --out FILE`: latency benchmarks from scenario files.

Each SCENARIO is a name in ``benchmarks/scenarios/`` or a path to a ``.toml`` file (default:
every scenario there). Writes ``FILE`` (JSON lines, one record per case), ``FILE`` with suffix
``.md`` (markdown tables) and PNG plots beside it (``<stem>.<scenario>.cdf.png``,
``.stages.png``, ``.streams.png``) and the pooled per-frame latencies the CDFs draw
(``<stem>.<scenario>.series.npz``). ``--from FILE...`` redraws tables and plots from those files
without measuring. See docs/benchmarking.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="scenario name in benchmarks/scenarios/ or a .toml path (default: all)")
    p.add_argument("--out", type=Path,
                   help="JSON-lines file; the markdown table and the plots go beside it")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 60 frames x 1 run, skip 5 (numbers not for reporting)")
    p.add_argument("--frames", type=int, default=None, help="frames per run (protocol: 1000)")
    p.add_argument("--runs", type=int, default=None, help="runs per case (protocol: 3)")
    p.add_argument("--skip", type=int, default=None,
                   help="frames left out at each end of a run (protocol: 10)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="stage config for every case, over the scenario's (repeatable), e.g. "
                        "infer.weights_dir=runs/frame/export")
    p.add_argument("--machine-note", default="",
                   help="free text stored with the machine, e.g. 'shared with other work'")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the runs' outputs (default: <out stem>.runs/ beside --out)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--from", dest="from_", type=Path, nargs="+", default=None, metavar="JSONL",
                   help="measure nothing: write the markdown table (--out with .md) from "
                        "records written earlier")


def run(args: argparse.Namespace) -> int:
    from sonoflow.stream.bench import plots, report, scenario
    from sonoflow.stream.bench.protocol import run_scenario

    if args.list:
        for path in scenario.available():
            scn = scenario.load(str(path))
            print(f"{scn.name:24s} {len(scn.cases):3d} case(s)  {scn.question or scn.description}")
        return 0
    if args.from_:
        if args.out is None:
            print("sonoflow bench: --from needs --out FILE.md", file=sys.stderr)
            return 2
        records = []
        for f in args.from_:
            recs = report.read_jsonl(f)
            records.extend(recs)
            for name in dict.fromkeys(r["scenario"] for r in recs):
                mine = [r for r in recs if r["scenario"] == name]
                series = plots.load_series(f.with_name(f"{f.stem}.{name}.series.npz"))
                made = [] if args.no_plots else plots.plot_all(
                    mine, series, args.out.with_name(f"{args.out.stem}.{name}"))
                for p in made:
                    print(f"  plot: {p}")
        args.out.with_suffix(".md").write_text(report.markdown(records))
        print(f"table: {args.out.with_suffix('.md')} ({len(records)} records)")
        return 0
    if args.out is None:
        print("sonoflow bench: --out FILE is required (JSON lines; the table and plots go "
              "beside it)", file=sys.stderr)
        return 2
    paths = [str(p) for p in scenario.available()] if not args.scenarios else args.scenarios
    if not paths:
        print("sonoflow bench: no scenarios given and none found in "
              f"{[str(d) for d in scenario.scenario_dirs()]}", file=sys.stderr)
        return 2
    scns = [scenario.load(p) for p in paths]  # validate every file before measuring anything
    if args.quick:
        scns = [s.with_protocol(frames=args.frames or 60, runs=args.runs or 1,
                                skip=5 if args.skip is None else args.skip) for s in scns]
    elif args.frames or args.runs or args.skip is not None:
        scns = [s.with_protocol(args.frames, args.runs, args.skip) for s in scns]
    if args.set:
        extra = scenario.parse_set(args.set)
        scns = [s.with_overrides(extra) for s in scns]
    out: Path = args.out
    work = args.work or out.with_name(out.stem + ".runs")
    all_records = []
    bad = 0
    for scn in scns:
        records, series = run_scenario(
            scn, work, note=args.machine_note,
            on_progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        report.write_jsonl(out, records, append=bool(all_records))
        all_records.extend(records)
        plots.save_series(series, out.with_name(f"{out.stem}.{scn.name}.series.npz"))
        made = [] if args.no_plots else plots.plot_all(
            records, series, out.with_name(f"{out.stem}.{scn.name}"))
        for r in records:
            e = r["e2e_ms"]
            status = ("skipped: " + r["skipped"]) if r["skipped"] else \
                ("FAILED: " + "; ".join(r["errors"])[:300]) if not r["ok"] else "ok"
            p50 = "-" if e["p50"] is None else f"{e['p50']:.2f}"
            p99 = "-" if e["p99"] is None else f"{e['p99']:.2f}"
            print(f"{scn.name} | {r['case']}: e2e p50 {p50} ms p99 {p99} ms, drops "
                  f"{r['drops']}/{r['frames']['total']} [{status}]")
            if not r["ok"] and not r["skipped"]:
                bad += 1
        for p in made:
            print(f"  plot: {p}")
    md = out.with_suffix(".md")
    md.write_text(report.markdown(all_records))
    print(f"records: {out}\ntable:   {md}")
    return 1 if bad else 0
