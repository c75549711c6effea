"""The ``view`` stage: the end of a live pipeline; shows each frame in a browser or a window."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import CaseHeader, EosHeader, FrameHeader, LesionHeader, Packet
from sonoflow.stream.render.annotate import to_rgb
from sonoflow.stream.stage import Stage

KINDS = ("web", "window")


class ViewStage(Stage):
    """Pushes ``arrays["overlay"]`` (or the plain image when no render stage ran) to a viewer.

    Config:
        kind: ``"web"`` (browser viewer, :class:`~sonoflow.stream.web.server.WebViewer`) or
            ``"window"`` (OpenCV window, :class:`~sonoflow.stream.render.window.WindowView`).
        host, port, token: where the web viewer binds (127.0.0.1; 0 = a free port) and its
            token (``""`` = random).
        jpeg_quality: JPEG quality of the frames sent to the browser (1..100).
        layers: the window's initial layers (the keys toggle them).
        snapshot_dir: where the window's ``s`` key writes PNGs.

    ``open()`` of the web kind prints the URL with the token as one line on stdout, flushed
    (``sonoflow live`` makes it the first line). Packets pass through unchanged.
    """

    key: ClassVar[str] = "view"
    defaults: ClassVar[dict[str, Any]] = {"kind": "web", "host": "127.0.0.1", "port": 0,
                                          "token": "", "jpeg_quality": 80,
                                          "layers": "default", "snapshot_dir": "snapshots"}

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        if self.config["kind"] not in KINDS:
            raise ConfigError(f"stage 'view': kind must be one of {KINDS}, got "
                              f"{self.config['kind']!r}")
        self.viewer: Any = None
        self.url: str | None = None

    def open(self) -> None:
        """Start the viewer (web: bind, serve, print the URL; window: open the window).

        Raises:
            StageError: the port cannot be bound, or no window can be opened here.
        """
        if self.config["kind"] == "web":
            from sonoflow.stream.web.server import WebViewer

            self.viewer = WebViewer(self.config["host"], self.config["port"],
                                    self.config["token"], self.config["jpeg_quality"])
            self.url = self.viewer.start()
            print(self.url, file=sys.stdout, flush=True)
        else:
            from sonoflow.stream.render.window import WindowView

            self.viewer = WindowView(layers=self.config["layers"],
                                     snapshot_dir=self.config["snapshot_dir"])
            self.viewer.open()

    def process(self, packet: Packet) -> Packet:
        header = packet.header
        if self.viewer is None:
            return packet
        if self.config["kind"] == "window":
            self.viewer.show(packet)
            return packet
        if isinstance(header, FrameHeader):
            overlay = packet.arrays.get("overlay")
            if overlay is None:
                image = packet.arrays.get("image")
                if image is None:
                    return packet  # nothing to show (a failed frame); counted by the HUD's seq
                overlay = to_rgb(image)
            self.viewer.publish(overlay, header)
        elif isinstance(header, LesionHeader):
            self.viewer.update_lesions(header.stream_id, [header.lesion])
        elif isinstance(header, CaseHeader):
            category = (header.case.get("lirads") or {}).get("category")
            self.viewer.end_case(header.stream_id, category)
        return packet

    def flush(self, eos: Packet) -> list[Packet]:
        if self.config["kind"] == "web" and self.viewer is not None:
            header = eos.header
            self.viewer.end(header.reason if isinstance(header, EosHeader) else "end")
        return []

    def close(self) -> None:
        if self.viewer is not None:
            if self.config["kind"] == "web":
                self.viewer.stop()
            else:
                self.viewer.close()
            self.viewer = None
