"""``sonoflow simulate``: write simulated clips with ground truth.

Each clip is written as ``<out>/sim_<seed>.<ext>`` plus ``sim_<seed>.gt.json`` and
``sim_<seed>.masks.npz``; clip ``i`` uses seed ``--seed + i``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sonoflow simulate``."""
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--clips", type=int, default=1, help="number of clips (default 1)")
    parser.add_argument("--frames", type=int, default=90, help="frames per clip (default 90)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip")
    parser.add_argument("--format", choices=["mp4", "dicom", "npz"], default="mp4")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--no-ui", action="store_true", help="no burned-in scanner UI")
    parser.add_argument("--no-events", action="store_true", help="no quality events")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the clips.

    Raises:
        ConfigError: bad counts, format or size.
        WriteError: an output cannot be written.
    """
    from pathlib import Path

    from tqdm import tqdm

    from sonoflow.stream.errors import ConfigError
    from sonoflow.stream.sim.export import write_clip

    if args.clips < 1 or args.frames < 1:
        raise ConfigError(f"--clips and --frames must be >= 1, got {args.clips} and {args.frames}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = args.clips * args.frames
    with tqdm(total=total, unit="frame", desc="simulate", disable=args.quiet) as bar:
        for i in range(args.clips):
            seed = args.seed + i
            paths = write_clip(out, seed, n_frames=args.frames, fmt=args.format,
                               height=args.height, width=args.width, fps=args.fps,
                               ui=not args.no_ui, events=not args.no_events,
                               on_frame=lambda: bar.update(1))
            bar.set_postfix_str(paths[0].name)
    if not args.quiet:
        print(f"wrote {args.clips} clip(s) to {out}")
    return 0
