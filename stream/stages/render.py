"""The ``render`` stage: adds ``arrays["overlay"]`` (uint8 HxWx3 RGB) to every frame packet."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import numpy as np

from sonoflow.stream.errors import ConfigError, StageError
from sonoflow.stream.messages import FrameHeader, InferResult, Packet, now_ns
from sonoflow.stream.render.annotate import annotate, parse_layers
from sonoflow.stream.render.stream_stats import StreamStats
from sonoflow.stream.stage import Stage


class RenderStage(Stage):
    """Draws the overlay with :func:`~sonoflow.stream.render.annotate.annotate`.

    Config:
        layers: comma-separated layer names, ``"default"``, ``"all"`` or ``"none"``
            (see :data:`~sonoflow.stream.render.annotate.LAYERS`).
        hold_ms: a frame the key-frame policy skipped (status ``"dropped"``, so ``infer`` did
            not run) shows the detections and lesion mask of the stream's last analysed frame
            when that frame was captured at most this long before; 0 turns it off. Without it
            boxes would flicker under an every-N policy. Frames *rejected* for quality never
            show held detections: their reason is shown instead.

    Input arrays are never modified: the overlay is a new array, and the returned packet has a
    new ``arrays`` dict. The header is enriched with ``extra["render"] = {"layers": [...],
    "ms": render time}``. Non-frame packets (lesion, case, eos, error) pass through untouched.
    """

    key: ClassVar[str] = "render"
    defaults: ClassVar[dict[str, Any]] = {"layers": "default", "hold_ms": 250.0}

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self.layers = parse_layers(self.config["layers"])
        self.hold_ns = int(float(self.config["hold_ms"]) * 1e6)
        if self.hold_ns < 0:
            raise ConfigError(f"stage 'render': hold_ms must be >= 0, got {self.config['hold_ms']}")
        self._stats: dict[str, StreamStats] = {}
        # stream id -> (capture_ns, infer result, lesion_mask) of its last analysed frame
        self._held: dict[str, tuple[int, InferResult, np.ndarray | None]] = {}

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
        draw_header, draw_arrays, held_seq_ns = self._with_held(header, packet.arrays)
        overlay = annotate(image, draw_header, draw_arrays, self.layers, stats=stats)
        header.extra["render"] = {"layers": sorted(self.layers), "ms": (now_ns() - t0) / 1e6}
        if held_seq_ns is not None:
            header.extra["render"]["held_age_ms"] = held_seq_ns / 1e6
        return Packet(header=header, arrays={**packet.arrays, "overlay": overlay})

    def _with_held(self, header: FrameHeader, arrays: dict[str, np.ndarray]
                   ) -> tuple[FrameHeader, dict[str, np.ndarray], int | None]:
        """The header/arrays to draw: the frame's own, or for a policy-skipped frame a shallow
        copy carrying the last analysed detections (inputs are not modified). The third value
        is the age in ns of the held detections, None when nothing is held."""
        sid = header.stream_id
        if header.status == "analysed" and header.infer is not None:
            self._held[sid] = (header.capture_ns, header.infer, arrays.get("lesion_mask"))
            return header, arrays, None
        held = self._held.get(sid)
        if (header.status != "dropped" or header.infer is not None or held is None
                or not 0 <= header.capture_ns - held[0] <= self.hold_ns):
            return header, arrays, None
        _, infer, mask = held
        draw_arrays = arrays if mask is None else {**arrays, "lesion_mask": mask}
        return msgspec.structs.replace(header, infer=infer), draw_arrays, header.capture_ns - held[0]

    def flush(self, eos: Packet) -> list[Packet]:
        self._stats.pop(eos.header.stream_id, None)
        self._held.pop(eos.header.stream_id, None)
        return []
