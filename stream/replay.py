"""Replay recorded sources through a pipeline, losslessly, one output folder per source."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonoflow.stream.errors import ConfigError, SonoflowError
from sonoflow.stream.graph import Pipeline, RunResult, Supervisor, load_pipeline

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    source: str
    out_dir: Path
    ok: bool
    error: str | None
    counts: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def frames_jsonl(self) -> Path:
        return self.out_dir / "frames.jsonl"

    @property
    def latency_json(self) -> Path:
        return self.out_dir / "latency.json"

    @property
    def case_json(self) -> Path | None:
        p = self.out_dir / "case.json"
        return p if p.exists() else None

    @property
    def report_html(self) -> Path | None:
        p = self.out_dir / "report.html"
        return p if p.exists() else None

    @property
    def overlay_mp4(self) -> Path | None:
        p = self.out_dir / "overlay.mp4"
        return p if p.exists() else None


def prepare(pipeline: str | Pipeline, out_dir: Path, overrides: dict[str, dict] | None,
            backend: str | None = None, precision: str | None = None,
            tta: str | None = None) -> Pipeline:
    """Load the pipeline, point its sink at ``out_dir``, apply CLI/model overrides
    (``backend``, ``precision``, ``tta``: the infer stage's settings).

    Raises:
        ConfigError: backend/precision/tta given but the pipeline has no ``infer`` stage, or
            the last stage is not a sink.
    """
    pipe = load_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    ov: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (overrides or {}).items()}
    infer = [s for s in pipe.stages if s.key == "infer"]
    if backend or precision or tta:
        if not infer:
            raise ConfigError(f"--backend/--precision/--tta given, but pipeline {pipe.name!r} "
                              "has no infer stage")
        cfg = ov.setdefault(infer[0].name, {})
        if backend:
            cfg["backend"] = backend
        if precision:
            cfg["precision"] = precision
        if tta:
            cfg["tta"] = tta
    sinks = [s for s in pipe.stages if s.key == "sink"]
    if sinks:
        ov.setdefault(sinks[-1].name, {})["out_dir"] = str(out_dir)
    return pipe.with_overrides(ov)


def replay_source(spec: str, out_dir: Path, pipeline: str | Pipeline = "analyse",
                  overrides: dict[str, dict] | None = None, mode: str = "threads",
                  progress: bool = True, pacing: str = "fast", backend: str | None = None,
                  precision: str | None = None, max_frames: int | None = None,
                  source_options: dict[str, Any] | None = None,
                  max_in_flight: int | None = None, tta: str | None = None) -> ReplayResult:
    """Replay one source through ``pipeline`` into ``out_dir`` (lossless ``block`` edges;
    ``max_in_flight`` = N keeps at most N frames between capture and sink, ``None`` the
    pipeline file's setting).

    Returns:
        ReplayResult with the output paths and frame counts; ``ok`` False (and ``error`` set,
        naming the file and the problem) when the source or a stage failed. Frames decoded
        before a fault are written.
    """
    out_dir = Path(out_dir)
    pipe = prepare(pipeline, out_dir, overrides, backend, precision, tta)
    bar = None
    total = None

    def on_ready(info: dict) -> None:
        nonlocal bar, total
        caps = [v for k, v in info.items() if k.startswith("capture-")]
        total = caps[0].get("frame_count") if caps else None
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=Path(spec).name if ":" not in spec else spec,
                       unit="frame", leave=False)

    def on_progress(n: int) -> None:
        if bar is not None:
            bar.update(n - bar.n)

    sup = Supervisor(pipe, [spec], mode=mode, pacing=pacing, policy="block",
                     on_progress=on_progress, on_ready=on_ready, max_frames=max_frames,
                     source_options=source_options, max_in_flight=max_in_flight)
    try:
        res: RunResult = sup.run()
    finally:
        if bar is not None:
            bar.close()
    counts: dict[str, int] = {}
    lat = out_dir / "latency.json"
    if lat.exists():
        doc = json.loads(lat.read_text())
        counts = doc.get("frames", {})
        doc["run"] = {"mode": mode, "pacing": pacing, "pipeline": pipe.name,
                      "max_in_flight": sup.max_in_flight,
                      "restarts": res.restarts, "events": res.events,
                      "elapsed_s": round(res.elapsed_s, 3)}
        lat.write_text(json.dumps(doc, indent=2))
    return ReplayResult(source=spec, out_dir=out_dir, ok=res.ok, error=res.error, counts=counts,
                        events=res.events, elapsed_s=res.elapsed_s)


def output_dir_for(spec: str, root: Path, taken: set[str]) -> Path:
    """``root/<source-stem>``, made unique when two sources share a stem."""
    from sonoflow.stream.sources.base import Source

    src = Source()
    src.spec = spec
    stem, k = src.stem, 1
    name = stem
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return Path(root) / name


def replay_many(specs: list[str], root: Path, workers: int = 1, **kwargs) -> list[ReplayResult]:
    """Replay several sources, ``workers`` at a time in separate processes."""
    taken: set[str] = set()
    jobs = [(s, output_dir_for(s, root, taken)) for s in specs]
    if workers <= 1 or len(jobs) == 1:
        return [replay_source(s, d, **kwargs) for s, d in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    kwargs = {**kwargs, "progress": False}
    results: list[ReplayResult] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(replay_source, s, d, **kwargs) for s, d in jobs]
        for (spec, out_dir), f in tqdm(list(zip(jobs, futs, strict=True)), desc="sources",
                                       unit="source"):
            try:
                results.append(f.result())
            except SonoflowError as e:
                results.append(ReplayResult(source=spec, out_dir=out_dir, ok=False,
                                            error=str(e)))
    return results
