"""The ``track`` stage: associates each analysed frame's detections into lesion tracks.

Sets ``Detection.track_id`` on ``header.infer.detections`` for detections of confirmed tracks
(what ``frames.jsonl`` and the overlay show). Every detection's track, tentative ones included,
is also written to ``header.extra["track"]`` so the aggregator can keep the evidence seen
before a track was confirmed::

    header.extra["track"] = {"ids": [int | None, ...],        # one per detection
                             "confirmed": [bool, ...]}

Frames without an ``infer`` result (rejected for quality, dropped by policy) do not update the
tracker: they carry no evidence, and must not age tracks.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

from sonoflow.stream.messages import FrameHeader, Packet
from sonoflow.stream.stage import Stage
from sonoflow.stream.tracking.tracker import ByteTrackLike, TrackerConfig

_TRACKER_DEFAULTS = {f.name: f.default for f in fields(TrackerConfig)}


class TrackStage(Stage):
    """Per-stream :class:`ByteTrackLike` trackers. Config keys are :class:`TrackerConfig`'s."""

    key: ClassVar[str] = "track"
    defaults: ClassVar[dict[str, Any]] = dict(_TRACKER_DEFAULTS)

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._tracker_config = TrackerConfig(**self.config)  # validates now, not at open
        self._trackers: dict[str, ByteTrackLike] = {}

    def process(self, packet: Packet) -> Packet:
        header = packet.header
        if not isinstance(header, FrameHeader) or header.infer is None:
            return packet
        tracker = self._trackers.get(header.stream_id)
        if tracker is None:
            tracker = self._trackers[header.stream_id] = ByteTrackLike(self._tracker_config)
        detections = header.infer.detections
        matched = tracker.update(detections, header.frame_index)
        ids: list[int | None] = [None] * len(detections)
        confirmed = [False] * len(detections)
        for t in matched:
            ids[t.detection_index] = t.track_id
            confirmed[t.detection_index] = t.confirmed
        for det, tid, ok in zip(detections, ids, confirmed, strict=True):
            det.track_id = tid if ok else None
        header.extra["track"] = {"ids": ids, "confirmed": confirmed}
        return packet

    def flush(self, eos: Packet) -> list[Packet]:
        self._trackers.pop(eos.header.stream_id, None)
        return []

    def close(self) -> None:
        self._trackers.clear()
