"""Assemble benchmarks/RESULTS.md from the per-topic sections in benchmarks/sections/.

Each section is written by the benchmark that produced its figures (the command is written
beside every figure). Run: `.venv/bin/python tools/assemble_results.py`.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["latency_s4", "latency_s3", "bench", "transport", "sources", "simulator", "preprocess_quality",
         "models", "classifier_and_eval", "findings", "render_view"]

HEADER = """# SonoFlow benchmark results

Every figure below names the command that produced it, the machine and the date. The first
two sections (and the session-3/4/5 parts of `models`, `classifier_and_eval` and `findings`)
were measured in sessions 3-5 on a **different machine**, a 2-core Intel Xeon VM with AVX-512
VNNI, idle apart from the run or shared with a named training run (they say which). Unless a
section says otherwise, the others
were measured in sessions 1-2 on the 2-core AMD Zen 3 development VM (24 GiB, no GPU), and on
2026-11-23 it was **shared with other work** while these ran (load average 5-10 on 2 cores):
absolute times are pessimistic and noisy; ratios measured side by side in one run are the
figures to trust. Never compare absolute figures across the two machines. No GPU was available to this work: every GPU/TensorRT figure is absent
and the sections say so.

Sections (assembled by `tools/assemble_results.py` from `benchmarks/sections/*.md`):
"""


def main() -> None:
    sections = ROOT / "benchmarks" / "sections"
    files = {p.stem: p for p in sections.glob("*.md")}
    names = [n for n in ORDER if n in files] + sorted(set(files) - set(ORDER))
    parts = [HEADER]
    parts += [f"- [{n}](#{n.replace('_', '-')})" for n in names]
    for n in names:
        parts.append("\n---\n")
        parts.append(f'<a id="{n.replace("_", "-")}"></a>\n')
        parts.append(files[n].read_text().strip() + "\n")
    (ROOT / "benchmarks" / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
