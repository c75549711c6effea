"""The one console script: ``sonoflow <command> ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import heavy dependencies (torch, models) inside ``run`` only, so
``sonoflow --help`` stays fast and the runtime never needs torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sonoflow.stream.errors import SonoflowError

# command word -> module. The word is the same in docs, logs and the registry.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sonoflow.stream.commands.demo", "simulate a clip and analyse it end to end"),
    "replay": ("sonoflow.stream.commands.replay", "replay recorded sources losslessly"),
    "live": ("sonoflow.stream.commands.live", "run a live source with a view"),
    "simulate": ("sonoflow.stream.sim.command", "write simulated clips with ground truth"),
    "bench": ("sonoflow.stream.commands.bench", "latency benchmarks from scenario files"),
    "train": ("sonoflow.training.command_train", "train a model (needs the train extra)"),
    "export": ("sonoflow.training.command_export", "prune, quantize and export models"),
    "eval": ("sonoflow.training.command_eval", "evaluate models or replay outputs"),
    "inspect": ("sonoflow.stream.commands.inspect", "print packets flowing on an edge"),
}


def build_parser() -> argparse.ArgumentParser:
    from sonoflow.stream import __version__

    parser = argparse.ArgumentParser(prog="sonoflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sonoflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    for word, (module, help_) in COMMANDS.items():
        p = sub.add_parser(word, help=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("sonoflow"):
                p.set_defaults(_missing=f"command {word!r} is not built yet ({e.name})")
                continue
            raise
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "_missing", None):
        print(f"sonoflow: {args._missing}", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except SonoflowError as e:
        print(f"sonoflow {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
