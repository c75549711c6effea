"""``preprocess``: find the sector, blank everything outside it, decide the pixel spacing.

Arrays out (the input ``image`` is never modified; new arrays replace or join it):

* ``image``: the input (grey or RGB) with every pixel outside the sector set to 0. Burned-in
  text (patient name, ID, date) is identifying information, so nothing outside the sector
  leaves the process; until a sector is found the whole frame is blank.
* ``gray``: uint8 (H, W) grey, blanked (the same array as ``image`` for grey input).
* ``sector_mask``: uint8 (H, W), 255 inside the sector.
* ``model_input`` (only when ``speckle_filter`` or ``normalize`` is set): uint8 (H, W), the
  filtered / normalised grey for the models; the original stays in ``image`` for rendering.

Header: ``header.preprocess`` (:class:`~sonoflow.stream.messages.PreprocessResult`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from sonoflow.stream.errors import ConfigError, StageError
from sonoflow.stream.imaging.calibration import CalibrationDecision, decide_calibration
from sonoflow.stream.imaging.ruler import RulerParams, RulerResult, find_depth_ruler
from sonoflow.stream.imaging.sector import SectorGeometry, SectorParams, to_gray
from sonoflow.stream.imaging.sector_tracker import SectorTracker
from sonoflow.stream.messages import FrameHeader, Packet, PreprocessResult
from sonoflow.stream.stage import Stage

SPECKLE_FILTERS = ("none", "median3", "median5", "bilateral")
NORMALIZERS = ("none", "clahe", "percentile")


class PreprocessStage(Stage):
    """Sector detection and tracking, blanking, calibration, optional model-input filtering.

    Config keys (see ``defaults``): ``work_px``, ``threshold_grey``, ``margin_px`` (sector
    detector, :class:`~sonoflow.stream.imaging.sector.SectorParams`); ``redetect_every``
    (frames between scheduled re-detections); ``ruler`` (read the on-screen depth ruler when
    the source has no spacing), ``ruler_tick_mm``, ``ruler_retries`` (frames, 30 apart, on
    which a ruler not found yet is searched again); ``speckle_filter``
    (one of :data:`SPECKLE_FILTERS`) and ``normalize`` (one of :data:`NORMALIZERS`) for
    ``model_input``.
    """

    per_stream = True  # frame history (sector, freeze, motion) is per stream

    key: ClassVar[str] = "preprocess"
    defaults: ClassVar[dict[str, Any]] = {
        "work_px": 320,
        "threshold_grey": 2.5,
        "margin_px": 2,
        "redetect_every": 300,
        "ruler": True,
        "ruler_tick_mm": 10.0,
        "ruler_retries": 5,
        "speckle_filter": "none",
        "normalize": "none",
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        c = self.config
        if c["speckle_filter"] not in SPECKLE_FILTERS:
            raise ConfigError(f"preprocess: speckle_filter {c['speckle_filter']!r} unknown; "
                              f"expected one of {SPECKLE_FILTERS}")
        if c["normalize"] not in NORMALIZERS:
            raise ConfigError(f"preprocess: normalize {c['normalize']!r} unknown; expected "
                              f"one of {NORMALIZERS}")
        for k in ("work_px", "margin_px", "redetect_every", "ruler_retries"):
            if not isinstance(c[k], int) or c[k] < 0 or (k == "work_px" and c[k] < 64):
                raise ConfigError(f"preprocess: {k} must be a non-negative integer "
                                  f"(work_px >= 64), got {c[k]!r}")
        self.sector_params = SectorParams(work_px=c["work_px"],
                                          threshold_grey=float(c["threshold_grey"]),
                                          margin_px=c["margin_px"])
        self.ruler_params = RulerParams(tick_mm=float(c["ruler_tick_mm"]))
        self.tracker = SectorTracker(self.sector_params, redetect_every=c["redetect_every"])
        self._clahe = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.tracker.reset()
        self._ruler: RulerResult | None = None
        self._ruler_note = "depth ruler: not searched"
        self._ruler_tries = 0
        self._ruler_wait = 0
        self._calib_key: tuple | None = None
        self._calib: CalibrationDecision | None = None
        self._empty: np.ndarray | None = None
        self._m3: tuple[np.ndarray, np.ndarray] | None = None

    def open(self) -> None:
        if self.config["normalize"] == "clahe":
            self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))

    def flush(self, eos: Packet) -> list[Packet]:
        self._reset_stream()
        return []

    def process(self, packet: Packet) -> Packet:
        """Blank, measure and calibrate one frame packet (other kinds pass through).

        Raises:
            StageError: the ``image`` array is not uint8 (H, W) or (H, W, 3).
        """
        header = packet.header
        if not isinstance(header, FrameHeader) or "image" not in packet.arrays:
            return packet  # failed frames carry no image; other kinds are not ours
        image = packet.arrays["image"]
        if image.dtype != np.uint8 or not (image.ndim == 2 or
                                           (image.ndim == 3 and image.shape[2] == 3)):
            raise StageError(f"preprocess: frame {header.frame_index} of {header.source!r}: "
                             f"image must be uint8 (H, W) or (H, W, 3), got {image.dtype} "
                             f"{image.shape}; convert at the source")
        gray = to_gray(image)
        geom, changed = self.tracker.update(gray)
        if changed or geom is None:
            self._ruler_tries = 0
            self._ruler_wait = 0
            self._ruler, self._ruler_note = None, "depth ruler: not searched"
            self._calib_key = None
        mask = geom.mask if geom is not None else self._empty_mask(gray.shape)
        if image.ndim == 2:
            out = cv2.bitwise_and(image, mask)
            gray_out = out
        else:
            out = cv2.bitwise_and(image, self._mask3(mask))
            gray_out = cv2.bitwise_and(gray, mask)
        packet.arrays["image"] = out
        packet.arrays["gray"] = gray_out
        packet.arrays["sector_mask"] = mask
        if self.config["speckle_filter"] != "none" or self.config["normalize"] != "none":
            packet.arrays["model_input"] = self._model_input(gray_out, mask)
        calib = self._calibration(header, gray, geom)
        header.preprocess = PreprocessResult(
            sector_kind=geom.kind if geom is not None else "none",
            sector_xyxy_px=geom.xyxy_px if geom is not None else None,
            mm_per_px=calib.mm_per_px,
            calibration_source=calib.source,
            calibration_note=calib.note,
            layout_changed=changed,
            blanked=True,
        )
        if geom is not None and geom.apex_xy_px is not None:
            # the fan's geometry lets ``quality`` bin pixels by scan line (angle from apex)
            header.extra["preprocess"] = {"apex_xy_px": list(geom.apex_xy_px),
                                          "radii_px": list(geom.radii_px),
                                          "half_angles_rad": list(geom.half_angles_rad)}
        return packet

    # --- internals ---------------------------------------------------------------------

    def _mask3(self, mask: np.ndarray) -> np.ndarray:
        """The mask on three channels (cached per layout): a plain 3-channel AND is ~4x
        faster in OpenCV than the single-channel ``mask=`` argument."""
        if self._m3 is None or self._m3[0] is not mask:
            self._m3 = (mask, cv2.merge([mask, mask, mask]))
        return self._m3[1]

    def _empty_mask(self, shape: tuple[int, int]) -> np.ndarray:
        if self._empty is None or self._empty.shape != shape:
            self._empty = np.zeros(shape, np.uint8)
            self._empty.flags.writeable = False
        return self._empty

    def _calibration(self, header: FrameHeader, gray: np.ndarray,
                     geom: SectorGeometry | None) -> CalibrationDecision:
        trusted = header.pixel_spacing_mm is not None and header.spacing_source != "none"
        if not trusted and geom is not None and self.config["ruler"] and self._ruler is None:
            self._maybe_search_ruler(gray, geom)
        key = (header.pixel_spacing_mm, header.spacing_source, header.spacing_note,
               self._ruler_note)
        if key != self._calib_key or self._calib is None:
            self._calib = decide_calibration(header.pixel_spacing_mm, header.spacing_source,
                                             header.spacing_note, self._ruler, self._ruler_note)
            self._calib_key = key
        return self._calib

    def _maybe_search_ruler(self, gray: np.ndarray, geom: SectorGeometry) -> None:
        if self._ruler_tries >= max(1, self.config["ruler_retries"]):
            return
        if self._ruler_wait > 0:
            self._ruler_wait -= 1
            return
        self._ruler_tries += 1
        self._ruler_wait = 30  # frames between searches for a ruler not found yet
        self._ruler, self._ruler_note = find_depth_ruler(gray, geom.mask, geom.xyxy_px,
                                                         self.ruler_params)

    def _model_input(self, gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
        c = self.config
        x = gray
        if c["speckle_filter"] == "median3":
            x = cv2.medianBlur(x, 3)
        elif c["speckle_filter"] == "median5":
            x = cv2.medianBlur(x, 5)
        elif c["speckle_filter"] == "bilateral":
            x = cv2.bilateralFilter(x, 5, 25.0, 5.0)
        if c["normalize"] == "clahe":
            if self._clahe is None:
                self.open()
            x = self._clahe.apply(x)
        elif c["normalize"] == "percentile":
            inside = x[mask > 0]
            if inside.size:
                lo, hi = np.percentile(inside[::7], (1.0, 99.0))
                if hi > lo:
                    lut = np.clip((np.arange(256) - lo) * 255.0 / (hi - lo), 0, 255)
                    x = cv2.LUT(x, lut.astype(np.uint8))
        return cv2.bitwise_and(x, mask)
