"""The one stage shape, and the registry that maps config keys to stage classes.

A stage knows nothing about sockets::

    stage = registry.create("quality", {"threshold": 0.5})  # __init__: cheap, validates config
    stage.open()                                             # load models, warm up
    out = stage.process(packet)                              # Packet | list[Packet] | None
    tail = stage.flush(eos_packet)                           # list[Packet] (trackers, aggregators)
    stage.close()

``process`` returns the same (enriched) packet, ``None`` to swallow it, or a list when it
emits extra events (e.g. ``lesion`` updates next to the frame). The :class:`StageRunner`
owns sockets, stamps, edge policy, end-of-stream and the error policy.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import Packet


class Stage:
    """Base class for every stage. Subclasses set ``key`` (the registry word) and override."""

    key: ClassVar[str] = ""
    #: config keys this stage accepts, with defaults; unknown keys are an error, never ignored.
    defaults: ClassVar[dict[str, Any]] = {}
    #: packet kinds passed to ``process`` (others are forwarded untouched)
    accepts: ClassVar[tuple[str, ...]] = ("frame",)
    #: also pass failed and header-only (dropped) frames to ``process`` (sinks, accounting)
    wants_all_frames: ClassVar[bool] = False
    #: the stage keeps state for one stream only: the runner gives each stream its own
    #: instance (several streams fanned into one pipeline must not share frame history)
    per_stream: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        unknown = set(config) - set(self.defaults)
        if unknown:
            raise ConfigError(f"stage {self.key!r}: unknown config key(s) {sorted(unknown)}; "
                              f"accepted: {sorted(self.defaults)}")
        self.config = {**self.defaults, **config}

    def open(self) -> None:
        """Load resources (models, files). Failures here are fatal with a clear message."""

    def process(self, packet: Packet) -> Packet | list[Packet] | None:
        return packet

    def flush(self, eos: Packet) -> list[Packet]:
        """Called once at end of stream, before ``eos`` is forwarded. Returns extra packets."""
        return []

    def close(self) -> None:
        """Release resources. Must be safe to call after a failed ``open``."""


# registry key -> "module:Class". Keys are the words used in pipeline files, CLI, logs, stamps.
STAGES: dict[str, str] = {
    "passthrough": "sonoflow.stream.stages.passthrough:PassThrough",
    "preprocess": "sonoflow.stream.stages.preprocess:PreprocessStage",
    "quality": "sonoflow.stream.stages.quality:QualityStage",
    "infer": "sonoflow.stream.stages.infer:InferStage",
    "track": "sonoflow.stream.stages.track:TrackStage",
    "aggregate": "sonoflow.stream.stages.aggregate:AggregateStage",
    "render": "sonoflow.stream.stages.render:RenderStage",
    "view": "sonoflow.stream.stages.view:ViewStage",
    "sink": "sonoflow.stream.sinks.outputs:OutputSink",
}


def stage_class(key: str) -> type[Stage]:
    """Import and return the stage class registered under ``key``.

    Raises:
        ConfigError: the key is not registered.
    """
    if key not in STAGES:
        raise ConfigError(f"unknown stage {key!r}; registered: {sorted(STAGES)}")
    module, _, name = STAGES[key].partition(":")
    return getattr(importlib.import_module(module), name)


def create(key: str, config: dict[str, Any] | None = None) -> Stage:
    return stage_class(key)(config)
