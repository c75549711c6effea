"""``sim:`` - the liver ultrasound simulator as a capture source.

Spec: ``sim:seed=S,frames=F,fps=30,width=640,height=480,ui=1,events=1`` (every key optional;
``frames=0`` streams without end). Further case keys: ``steatosis=0..3``, ``fibrosis=0..4``,
``lesions=0..8``, ``depth=120..200`` (mm); ``workers=2`` renders ahead on a second core
(same frames). Frames carry their exact ground truth in
``SourceFrame.extra["sim"]`` (the frame's entry of the ground-truth JSON) and the source's
calibration is the simulator's own mm/px (``source == "simulator"``).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

from sonoflow.stream.errors import ConfigError, SourceError
from sonoflow.stream.sources.base import Calibration, Source, SourceFrame
from sonoflow.stream.sources.pattern import parse_options

_KEYS = {"seed": int, "frames": int, "fps": float, "width": int, "height": int, "ui": int,
         "events": int, "steatosis": int, "fibrosis": int, "lesions": int, "depth": float,
         "workers": int}
_CASE_KEYS = {"steatosis": "steatosis_grade", "fibrosis": "fibrosis_stage",
              "lesions": "n_lesions", "depth": "depth_mm"}


class SimSource(Source):
    """Simulated B-mode frames with ground truth.

    Args:
        spec: the ``sim:...`` string.
        **options: the same keys as keyword arguments (override the spec).

    Raises:
        SourceError: unknown key, bad value, or a case override out of range.
    """

    pixel_format = "gray8"

    def __init__(self, spec: str = "sim:", **options):
        self.spec = spec
        o: dict = {"seed": 0, "frames": 300, "fps": 30.0, "width": 640, "height": 480, "ui": 1,
                   "events": 1, "workers": 1}
        o.update(parse_options(spec, "sim:", _KEYS))
        unknown = sorted(set(options) - set(_KEYS))
        if unknown:
            raise SourceError(spec, f"options {unknown} not understood; accepted: {sorted(_KEYS)}")
        o.update(options)
        if o["frames"] < 0 or o["fps"] <= 0 or o["seed"] < 0:
            raise SourceError(spec, f"need frames >= 0 (0 = endless), fps > 0, seed >= 0; got "
                                    f"frames={o['frames']}, fps={o['fps']}, seed={o['seed']}")
        if o["width"] % 2 or o["height"] % 2 or min(o["width"], o["height"]) < 64:
            raise SourceError(spec, f"width and height must be even and >= 64, got "
                                    f"{o['width']}x{o['height']}")
        self.o = o
        self.fps = float(o["fps"])
        self.frame_count = int(o["frames"]) or None
        self.live = o["frames"] == 0
        self._case = None
        self._clip = None

    def open(self) -> None:
        """Sample the case and build the renderer (idempotent).

        Raises:
            SourceError: the case overrides are invalid.
        """
        if self._clip is not None:
            return
        from sonoflow.stream.sim.case import sample_case
        from sonoflow.stream.sim.clip import ClipRenderer

        o = self.o
        overrides = {_CASE_KEYS[k]: o[k] for k in _CASE_KEYS if k in o}
        try:
            self._case = sample_case(o["seed"], ui=bool(o["ui"]), events=bool(o["events"]),
                                     **overrides)
            self._clip = ClipRenderer(self._case, self.frame_count, o["height"], o["width"],
                                      self.fps, workers=int(o["workers"]))
        except ConfigError as e:
            raise SourceError(self.spec, f"cannot build the simulated case: {e}") from e
        self.calibration = Calibration(self._case.mm_per_px(o["height"], o["width"]), "simulator")

    def close(self) -> None:
        """Stop render-ahead threads."""
        if self._clip is not None:
            self._clip.close()

    @property
    def case(self):
        """The simulated case (after :meth:`open`)."""
        return self._case

    def frames(self) -> Iterator[SourceFrame]:
        """Frames from 0, each with its truth in ``extra['sim']``."""
        self.open()
        self._clip.reset()  # each iteration replays the clip from frame 0, bit-identical
        step = Fraction(1, 1) / Fraction(self.fps).limit_denominator(1001)
        tb = (step.numerator, step.denominator)
        i = 0
        while self.frame_count is None or i < self.frame_count:
            f = self._clip.frame(i)
            yield SourceFrame(image=f.image, frame_index=i, pts=i, time_base=tb,
                              extra={"sim": f.truth})
            i += 1
