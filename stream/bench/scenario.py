"""Benchmark scenario files (TOML) and the cases they expand to.

A scenario answers one question. It names a source, a pipeline, the protocol (frames, runs,
frames skipped at each end) and the settings it varies; every combination is a *case*, and all
cases of a scenario are measured side by side in one invocation (runs interleaved)::

    name = "transport"
    question = "What does one hop cost, per transport, over a plain function-call chain?"
    source = "pattern:width=640,height=480,fps=30"   # frames=N is added by the tool
    prerender = false     # sim: sources: render once into an npz cache (source cost excluded)
    pipeline = "relay"    # shipped name or a .toml path; or inline [[stage]] tables (below)
    frames = 1000         # per run (the protocol: 1000 x 3 runs, skip 10 at each end)
    runs = 3
    skip = 10
    pacing = "fast"       # or "realtime" (the source's fps)
    mode = "threads"      # threads (inproc) | processes (ipc) | tcp (loopback, CURVE)
    streams = 1           # concurrent copies of the source fanned into the pipeline
    policy = "block"      # edge policy override; "" keeps the pipeline file's
    hwm = 0               # edge queue depth (ZeroMQ high-water marks); 0 keeps the pipeline's
    max_in_flight = 0     # credit window: at most N frames between capture and sink (0 keeps
                          # the pipeline's; see CaptureRunner)
    video = false         # the sink also encodes overlay.mp4
    fuse = false          # true: the whole chain in one runner (one hop after capture)
    inline = false        # true: the capture runs the first runner's stages itself (no socket
                          # between source and chain; with fuse = true, no socket at all)
    groups = { preprocess = "front", quality = "front" }  # stage name -> runner group:
                          # consecutive stages of a group share one runner (see graph.py);
                          # "" takes a stage out of the pipeline file's group

    [[stage]]             # inline pipeline (instead of `pipeline`); a sink is appended
    key = "passthrough"
    name = "hop1"

    [overrides.infer]     # stage config overrides, by stage name
    precision = "int8"

    [matrix]              # axes: every combination becomes a case
    mode = ["threads", "processes", "tcp"]
    pacing = ["fast", "realtime"]

    [[variant]]           # explicit cases, each crossed with the matrix axes it does not set
    label = "plain loop"
    engine = "plain"      # sonoflow (default) | plain | holoscan-greedy | holoscan-event

Unknown keys, wrong types and impossible values are errors naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonoflow.stream.errors import ConfigError

ENGINES = ("sonoflow", "plain", "holoscan-greedy", "holoscan-event")
MODES = ("threads", "processes", "tcp")
PACINGS = ("fast", "realtime")
AXES = ("mode", "pacing", "streams", "policy", "engine", "hwm", "fuse", "inline",
        "max_in_flight")
_TOP_KEYS = {"name", "description", "question", "source", "prerender", "pipeline", "frames",
             "runs", "skip", "pacing", "mode", "streams", "policy", "hwm", "fuse", "inline",
             "groups", "max_in_flight",
             "video", "stage", "overrides", "matrix", "variant", "expect"}
_VARIANT_KEYS = {"label", "engine", "mode", "pacing", "streams", "policy", "hwm", "fuse",
                 "inline", "groups", "overrides", "max_in_flight"}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "description": str, "question": str, "source": str, "prerender": bool,
    "pipeline": str, "frames": int, "runs": int, "skip": int, "pacing": str, "mode": str,
    "streams": int, "policy": str, "hwm": int, "fuse": bool, "inline": bool, "video": bool,
    "label": str, "max_in_flight": int,
    "engine": str}


@dataclass(frozen=True)
class Case:
    """One measured configuration of a scenario.

    Attributes:
        label: unique within the scenario, e.g. ``"processes fast"``.
        engine: ``sonoflow`` | ``plain`` | ``holoscan-greedy`` | ``holoscan-event``.
        mode: execution mode of the sonoflow engine (``"-"`` for the others).
        pacing: ``fast`` | ``realtime``.
        streams: concurrent streams.
        policy: edge policy override (``""`` keeps the pipeline's).
        hwm: edge queue depth override (0 keeps the pipeline's).
        fuse: run the whole chain fused in one runner (one hop; sonoflow engine only).
        overrides: stage name -> config overrides.
        inline: the capture runs the first runner's stages (one stream; sonoflow only).
        groups: ``(stage name, group)`` pairs: consecutive stages of one group share a runner
            (sonoflow engine only; ``fuse`` takes precedence).
        max_in_flight: credit window per stream (0 keeps the pipeline's; sonoflow only).
    """

    label: str
    engine: str
    mode: str
    pacing: str
    streams: int
    policy: str
    hwm: int = 0
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)
    fuse: bool = False
    groups: tuple[tuple[str, str], ...] = ()
    inline: bool = False
    max_in_flight: int = 0


@dataclass
class Scenario:
    """A loaded, validated scenario (see the module docstring for the file format)."""

    name: str
    path: str
    question: str
    description: str
    source: str
    prerender: bool
    pipeline: str | None
    stages: list[dict[str, Any]]
    frames: int
    runs: int
    skip: int
    video: bool
    cases: list[Case]
    expect: dict[str, float]
    doc: dict[str, Any]

    @property
    def hash(self) -> str:
        """sha256 (first 16 hex digits) of the resolved scenario, protocol included."""
        blob = json.dumps({**self.doc, "frames": self.frames, "runs": self.runs,
                           "skip": self.skip}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_protocol(self, frames: int | None = None, runs: int | None = None,
                      skip: int | None = None) -> Scenario:
        """A copy with the protocol changed (``--quick``, ``--frames``, ``--runs``).

        Raises:
            ConfigError: the frames left after skipping both ends would be fewer than 10.
        """
        s = Scenario(**{**self.__dict__})
        s.frames = self.frames if frames is None else frames
        s.runs = self.runs if runs is None else runs
        s.skip = self.skip if skip is None else skip
        _check_protocol(s.path, s.frames, s.runs, s.skip)
        return s


    def with_overrides(self, extra: dict[str, dict[str, Any]]) -> Scenario:
        """A copy whose every case also gets ``extra`` (stage -> config), winning over the
        file's overrides (``sonoflow bench --set``); recorded in the hash."""
        s = Scenario(**{**self.__dict__})
        s.cases = []
        for c in self.cases:
            ov = {k: dict(v) for k, v in c.overrides.items()}
            for name, cfg in extra.items():
                ov.setdefault(name, {}).update(cfg)
            s.cases.append(dataclasses.replace(c, overrides=ov))
        s.doc = {**self.doc, "set": extra}
        return s


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["infer.precision=int8", "infer.threads=2"]`` -> ``{"infer": {...}}``; values are TOML
    scalars (``2``, ``1.5``, ``true``, ``"text"``), else plain strings.

    Raises:
        ConfigError: an item without ``STAGE.KEY=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            raise ConfigError(f"--set {item!r}: expected STAGE.KEY=VALUE, e.g. "
                              "infer.precision=int8")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(stage, {})[name] = value
    return out


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ``./benchmarks/scenarios`` then the checkout's."""
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
    cwd = Path.cwd() / "benchmarks" / "scenarios"
    return [cwd] if cwd.resolve() == here else [cwd, here]


def available() -> list[Path]:
    """Every scenario file found in :func:`scenario_dirs`, by name, first folder wins."""
    seen: dict[str, Path] = {}
    for d in scenario_dirs():
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            seen.setdefault(p.stem, p)
    return [seen[k] for k in sorted(seen)]


def find(name_or_path: str) -> Path:
    """Resolve a scenario name (``benchmarks/scenarios/<name>.toml``) or path.

    Raises:
        ConfigError: not found; the message lists the scenarios there are.
    """
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{p}: scenario file not found")
        return p
    for d in scenario_dirs():
        q = d / f"{name_or_path}.toml"
        if q.is_file():
            return q
    names = [q.stem for q in available()]
    raise ConfigError(f"unknown scenario {name_or_path!r}; expected one of {names} or a path "
                      f"to a .toml file (looked in {[str(d) for d in scenario_dirs()]})")


def load(name_or_path: str) -> Scenario:
    """Load and validate a scenario.

    Raises:
        ConfigError: missing file, bad TOML, unknown keys, wrong types or values.
    """
    path = find(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return parse(doc, str(path))


def parse(doc: dict[str, Any], where: str) -> Scenario:
    """Validate a scenario document (already parsed TOML) and expand its cases.

    Raises:
        ConfigError: unknown keys, wrong types or values, duplicate case labels.
    """
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; accepted: "
                          f"{sorted(_TOP_KEYS)}")
    for k, t in _TYPES.items():
        if k in doc:
            _check_type(where, k, doc[k], t)
    if "source" not in doc:
        raise ConfigError(f"{where}: `source` is required (e.g. \"pattern:width=640,height=480\" "
                          "or \"sim:seed=3\" or a file path)")
    if ("pipeline" in doc) == ("stage" in doc):
        raise ConfigError(f"{where}: give exactly one of `pipeline` (a name or .toml path) and "
                          "inline [[stage]] tables")
    stages = list(doc.get("stage", []))
    for i, s in enumerate(stages):
        if not isinstance(s, dict) or "key" not in s:
            raise ConfigError(f"{where}: [[stage]] #{i + 1} needs a `key` (a registered stage)")
        bad = set(s) - {"key", "name", "config"}
        if bad:
            raise ConfigError(f"{where}: [[stage]] #{i + 1}: unknown field(s) {sorted(bad)}")
    frames, runs, skip = int(doc.get("frames", 1000)), int(doc.get("runs", 3)), \
        int(doc.get("skip", 10))
    _check_protocol(where, frames, runs, skip)
    base = {"engine": "sonoflow", "mode": doc.get("mode", "threads"),
            "pacing": doc.get("pacing", "fast"), "streams": int(doc.get("streams", 1)),
            "policy": doc.get("policy", ""), "hwm": int(doc.get("hwm", 0)),
            "fuse": bool(doc.get("fuse", False)),
            "inline": bool(doc.get("inline", False)),
            "max_in_flight": doc.get("max_in_flight", 0),
            "groups": _groups(where, doc.get("groups")),
            "overrides": _overrides(where, doc.get("overrides"))}
    matrix = doc.get("matrix", {})
    if not isinstance(matrix, dict) or set(matrix) - set(AXES):
        raise ConfigError(f"{where}: [matrix] axes must be among {AXES}, got "
                          f"{sorted(matrix) if isinstance(matrix, dict) else matrix!r}")
    for k, v in matrix.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}: [matrix] {k} must be a non-empty list, got {v!r}")
    variants = doc.get("variant", [{}]) or [{}]
    cases: list[Case] = []
    seen: set[tuple] = set()
    for vi, var in enumerate(variants):
        bad = set(var) - _VARIANT_KEYS
        if bad:
            raise ConfigError(f"{where}: [[variant]] #{vi + 1}: unknown key(s) {sorted(bad)}; "
                              f"accepted: {sorted(_VARIANT_KEYS)}")
        for k in var:
            if k in _TYPES:
                _check_type(f"{where} [[variant]] #{vi + 1}", k, var[k], _TYPES[k])
        axes = [a for a in matrix if a not in var]  # a variant's own setting pins its axis
        for point in itertools.product(*(matrix[a] for a in axes)) if axes else [()]:
            c = {**base, **{k: v for k, v in var.items()
                            if k not in ("label", "overrides", "groups")},
                 **dict(zip(axes, point, strict=True))}
            if "groups" in var:  # over the scenario's own, as overrides are
                own = _groups(f"{where} [[variant]] #{vi + 1}", var["groups"])
                c["groups"] = tuple(sorted({**dict(base["groups"]), **dict(own)}.items()))
            ov = {k: dict(v) for k, v in base["overrides"].items()}
            for name, cfg in _overrides(where, var.get("overrides")).items():
                ov.setdefault(name, {}).update(cfg)
            case = _case(where, c, ov, var.get("label", ""), axes, point)
            key = (case.engine, case.mode, case.pacing, case.streams, case.policy, case.hwm,
                   case.fuse, case.inline, case.groups, case.max_in_flight,
                   json.dumps(case.overrides, sort_keys=True))
            if key in seen:
                continue  # e.g. the plain loop crossed with a mode axis it does not have
            seen.add(key)
            cases.append(case)
    labels = [c.label for c in cases]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{where}: case labels {dup} are not unique; give each [[variant]] a "
                          "distinct `label`")
    expect = doc.get("expect", {})
    if not isinstance(expect, dict) or not all(isinstance(v, int | float) for v in
                                               expect.values()):
        raise ConfigError(f"{where}: [expect] maps a target name to a number, got {expect!r}")
    return Scenario(name=doc.get("name", Path(where).stem), path=where,
                    question=doc.get("question", ""), description=doc.get("description", ""),
                    source=doc["source"], prerender=bool(doc.get("prerender", False)),
                    pipeline=doc.get("pipeline"), stages=stages, frames=frames, runs=runs,
                    skip=skip, video=bool(doc.get("video", False)), cases=cases,
                    expect=dict(expect), doc=doc)


def _check_type(where: str, key: str, value: Any, t: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) and t is int or not isinstance(value, t):
        name = t.__name__ if isinstance(t, type) else "/".join(x.__name__ for x in t)
        raise ConfigError(f"{where}: `{key}` must be {name}, got {value!r}")


def _check_protocol(where: str, frames: int, runs: int, skip: int) -> None:
    if runs < 1 or skip < 0 or frames - 2 * skip < 10:
        raise ConfigError(f"{where}: protocol frames={frames}, runs={runs}, skip={skip} leaves "
                          f"{frames - 2 * skip} frame(s) per run; need runs >= 1, skip >= 0 and "
                          "frames - 2*skip >= 10")


def _overrides(where: str, ov: Any) -> dict[str, dict[str, Any]]:
    if ov is None:
        return {}
    if not isinstance(ov, dict) or not all(isinstance(v, dict) for v in ov.values()):
        raise ConfigError(f"{where}: `overrides` maps a stage name to a table of config keys, "
                          f"got {ov!r}")
    return {k: dict(v) for k, v in ov.items()}


def _groups(where: str, g: Any) -> tuple[tuple[str, str], ...]:
    if g is None:
        return ()
    if not isinstance(g, dict) or not all(isinstance(v, str) for v in g.values()):
        raise ConfigError(f"{where}: `groups` maps a stage name to a group name (a string; "
                          f"\"\" = a runner of its own), got {g!r}")
    return tuple(sorted(g.items()))


def _case(where: str, c: dict[str, Any], ov: dict[str, dict[str, Any]], label: str,
          axes: list[str], point: tuple) -> Case:
    if c["engine"] not in ENGINES:
        raise ConfigError(f"{where}: engine {c['engine']!r}; expected one of {ENGINES}")
    if c["mode"] not in MODES:
        raise ConfigError(f"{where}: mode {c['mode']!r}; expected one of {MODES}")
    if c["pacing"] not in PACINGS:
        raise ConfigError(f"{where}: pacing {c['pacing']!r}; expected one of {PACINGS}")
    if c["policy"] not in ("", "block", "latest"):
        raise ConfigError(f"{where}: policy {c['policy']!r}; expected \"\", \"block\" or "
                          "\"latest\"")
    if not isinstance(c["hwm"], int) or isinstance(c["hwm"], bool) or c["hwm"] < 0:
        raise ConfigError(f"{where}: hwm must be an integer >= 0 (0 = the pipeline's), got "
                          f"{c['hwm']!r}")
    if not isinstance(c["max_in_flight"], int) or isinstance(c["max_in_flight"], bool) \
            or c["max_in_flight"] < 0:
        raise ConfigError(f"{where}: max_in_flight must be an integer >= 0 (0 = the pipeline's), "
                          f"got {c['max_in_flight']!r}")
    if not isinstance(c["streams"], int) or c["streams"] < 1:
        raise ConfigError(f"{where}: streams must be an integer >= 1, got {c['streams']!r}")
    if c.get("inline") and c["streams"] != 1:
        raise ConfigError(f"{where}: inline capture runs one stream; got streams={c['streams']}")
    if c["engine"] != "sonoflow":
        if c["streams"] != 1:
            raise ConfigError(f"{where}: engine {c['engine']!r} measures one stream; got "
                              f"streams={c['streams']}")
        # no edges, no execution modes: the pipeline-only settings do not apply
        c["mode"], c["hwm"], c["policy"], c["fuse"], c["groups"] = "-", 0, "", False, ()
        c["inline"], c["max_in_flight"] = False, 0
    parts = [label] if label else []
    if not label and c["engine"] != "sonoflow":
        parts.append(c["engine"])
    for a, v in zip(axes, point, strict=True):
        if a == "mode" and c["engine"] != "sonoflow":
            continue
        if a in ("hwm", "fuse", "inline", "max_in_flight") and c["engine"] != "sonoflow":
            continue
        parts.append(f"{v} stream{'s' if v != 1 else ''}" if a == "streams" else
                     f"hwm {v}" if a == "hwm" else
                     (f"max {v} in flight" if v else "no credit window")
                     if a == "max_in_flight" else
                     ("fused" if v else "one runner per stage") if a == "fuse" else
                     ("inline capture" if v else "capture apart") if a == "inline" else str(v))
    if not parts:
        parts = [c["engine"] if c["engine"] != "sonoflow" else c["mode"]]
    return Case(label=" ".join(parts), engine=c["engine"], mode=c["mode"], pacing=c["pacing"],
                streams=int(c["streams"]), policy=c["policy"], hwm=int(c["hwm"]), overrides=ov,
                fuse=bool(c.get("fuse", False)), groups=tuple(c.get("groups", ())),
                inline=bool(c.get("inline", False)), max_in_flight=int(c["max_in_flight"]))
