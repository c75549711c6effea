"""The ``render`` stage: adds ``arrays["overlay"]`` (uint8 HxWx3 RGB) to every frame packet."""

from __future__ import annotations

from typing import Any, ClassVar

from sonoflow.stream.errors import StageError
from sonoflow.stream.messages import FrameHeader, Packet, now_ns
from sonoflow.stream.render.annotate import annotate, parse_layers
from sonoflow.stream.render.stream_stats import StreamStats
from sonoflow.stream.stage import Stage


class RenderStage(Stage):
    """Draws the overlay with :func:`~sonoflow.stream.render.annotate.annotate`.

    Config:
        layers: comma-separated layer names, ``"default"``, ``"all"`` or ``"none"``
            (see :data:`~sonoflow.stream.render.annotate.LAYERS`).

    Input arrays are never modified: the overlay is a new array, and the returned packet has a
    new ``arrays`` dict. The header is enriched with ``extra["render"] = {"layers": [...],
    "ms": render time}``. Non-frame packets (lesion, case, eos, error) pass through untouched.
    """

    key: ClassVar[str] = "render"
    defaults: ClassVar[dict[str, Any]] = {"layers": "default"}

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self.layers = parse_layers(self.config["layers"])
        self._stats: dict[str, StreamStats] = {}

    def process(self, packet: Packet) -> Packet:
        """Render one frame.

        Raises:
            StageError: a frame packet has no ``image`` array.
        """
        header = packet.header
        if not isinstance(header, FrameHeader):
            return packet
        image = packet.arrays.get("image")
        if image is None:
            raise StageError(f"render: frame seq={header.seq} of {header.stream_id!r} has no "
                             f"'image' array (arrays: {sorted(packet.arrays)}); the capture "
                             "stage must forward it")
        t0 = now_ns()
        stats = self._stats.setdefault(header.stream_id, StreamStats()).update(header, t0)
        overlay = annotate(image, header, packet.arrays, self.layers, stats=stats)
        header.extra["render"] = {"layers": sorted(self.layers), "ms": (now_ns() - t0) / 1e6}
        return Packet(header=header, arrays={**packet.arrays, "overlay": overlay})

    def flush(self, eos: Packet) -> list[Packet]:
        self._stats.pop(eos.header.stream_id, None)
        return []
