"""The OpenCV window view (``sonoflow live SOURCE --view window``).

Keys (also listed in docs/viewer.md):

====  =====================================
b     lesion boxes on/off
t     labels (id, class, confidence, features)
m     lesion mask outlines
v     liver outline
k     quality bar
h     HUD (fps, latency, drops)
c     case panel (lesions, LI-RADS)
a     all layers back to the default
space pause / resume (frames keep flowing and are counted; the picture holds)
s     snapshot: PNG of what is on screen into the snapshot folder
q/Esc quit (same as Ctrl-C in the terminal)
====  =====================================

When the user's layer choice differs from what the ``render`` stage drew, the window redraws
the overlay itself from the packet's ``image``, masks and header.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from sonoflow.stream.errors import StageError
from sonoflow.stream.messages import FrameHeader, Packet, now_ns
from sonoflow.stream.render.annotate import DEFAULT_LAYERS, annotate, parse_layers
from sonoflow.stream.render.stream_stats import StreamStats

#: key code -> layer it toggles
LAYER_KEYS = MappingProxyType({ord("b"): "boxes", ord("t"): "labels", ord("m"): "masks",
                               ord("v"): "liver", ord("k"): "quality", ord("h"): "hud",
                               ord("c"): "case"})
KEY_DEFAULTS, KEY_PAUSE, KEY_SNAPSHOT, KEY_QUIT, KEY_ESC = ord("a"), ord(" "), ord("s"), ord("q"), 27


def gui_available() -> bool:
    """True when this OpenCV build can open windows (``opencv-python-headless`` cannot)."""
    info = cv2.getBuildInformation()
    start = info.find("GUI:")
    if start < 0:
        return False
    line = info[start:info.find("\n", start)]
    return "NONE" not in line.upper()


def _raise_sigint() -> None:
    signal.raise_signal(signal.SIGINT)


class WindowView:
    """Shows frames in an OpenCV window and reacts to keys.

    Args:
        title: window title.
        layers: layers shown at start (see :func:`~sonoflow.stream.render.annotate.parse_layers`).
        snapshot_dir: where ``s`` writes PNGs (created on first snapshot).
        gui: the object providing ``namedWindow``, ``imshow``, ``waitKey``, ``destroyWindow``
            (``cv2`` by default; tests pass a fake).
        on_quit: called on ``q``/Esc; by default raises SIGINT in this process, which stops
            ``sonoflow live`` like Ctrl-C.
    """

    def __init__(self, title: str = "SonoFlow live", layers: Any = DEFAULT_LAYERS,
                 snapshot_dir: str | Path = "snapshots", gui: Any = None,
                 on_quit: Callable[[], None] | None = None):
        self.title = title
        self.layers = set(parse_layers(layers))
        self.snapshot_dir = Path(snapshot_dir)
        self.gui = gui if gui is not None else cv2
        self.on_quit = on_quit or _raise_sigint
        self.paused = False
        self.snapshots: list[Path] = []
        self._shown: np.ndarray | None = None
        self._shown_seq: int | None = None
        self._stats = StreamStats()
        self._opened = False

    def open(self) -> None:
        """Create the window.

        Raises:
            StageError: OpenCV has no GUI support here (headless build or no display).
        """
        if self.gui is cv2 and not gui_available():
            raise StageError("--view window needs an OpenCV build with GUI support, but this "
                             "one is headless (GUI: NONE); install opencv-python instead of "
                             "opencv-python-headless, or use --view web")
        try:
            self.gui.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise StageError(f"--view window: cannot open a window ({e}); is a display "
                             "available (DISPLAY / WAYLAND_DISPLAY)? Else use --view web") from e
        self._opened = True

    def frame_for(self, packet: Packet) -> np.ndarray:
        """The RGB picture for ``packet`` with the window's current layers (a new array).

        Uses ``arrays["overlay"]`` when the render stage drew exactly these layers, else draws
        from ``arrays["image"]``.

        Raises:
            StageError: the packet has neither a usable overlay nor an image.
        """
        header = packet.header
        stats = self._stats.update(header, now_ns())
        overlay = packet.arrays.get("overlay")
        drawn = set(header.extra.get("render", {}).get("layers", ())) if overlay is not None else None
        if overlay is not None and drawn == self.layers:
            return overlay
        image = packet.arrays.get("image")
        if image is None:
            if overlay is not None:
                return overlay
            raise StageError(f"window view: frame seq={header.seq} has neither 'overlay' nor "
                             f"'image' (arrays: {sorted(packet.arrays)})")
        return annotate(image, header, packet.arrays, self.layers, stats=stats)

    def show(self, packet: Packet) -> str | None:
        """Display one frame packet (unless paused) and handle one key press.

        Returns:
            The action the key triggered (see :meth:`handle_key`), or None.
        """
        if not self._opened:
            self.open()
        if not isinstance(packet.header, FrameHeader):
            return None
        if not self.paused or self._shown is None:
            self._shown = self.frame_for(packet)
            self._shown_seq = packet.header.seq
        self.gui.imshow(self.title, cv2.cvtColor(self._shown, cv2.COLOR_RGB2BGR))
        return self.handle_key(self.gui.waitKey(1) & 0xFF)

    def handle_key(self, key: int) -> str | None:
        """Apply one key code; returns ``"toggle:<layer>"``, ``"defaults"``, ``"pause"``,
        ``"resume"``, ``"snapshot"``, ``"quit"`` or None for keys without a meaning."""
        if key in LAYER_KEYS:
            layer = LAYER_KEYS[key]
            self.layers.symmetric_difference_update({layer})
            return f"toggle:{layer}"
        if key == KEY_DEFAULTS:
            self.layers = set(DEFAULT_LAYERS)
            return "defaults"
        if key == KEY_PAUSE:
            self.paused = not self.paused
            return "pause" if self.paused else "resume"
        if key == KEY_SNAPSHOT:
            self.snapshot()
            return "snapshot"
        if key in (KEY_QUIT, KEY_ESC):
            self.on_quit()
            return "quit"
        return None

    def snapshot(self) -> Path | None:
        """Write the picture on screen as ``snapshot_dir/frame-<seq>.png``; None if none yet.

        Raises:
            StageError: the PNG cannot be written.
        """
        if self._shown is None:
            return None
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / f"frame-{self._shown_seq:06d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(self._shown, cv2.COLOR_RGB2BGR)):
            raise StageError(f"window view: could not write snapshot {path}")
        self.snapshots.append(path)
        return path

    def close(self) -> None:
        """Destroy the window (safe when it never opened)."""
        if self._opened:
            try:
                self.gui.destroyWindow(self.title)
            except cv2.error:
                pass  # the window is already gone (closed by the user)
            self._opened = False

