"""Clip writers: mp4 (PyAV, H.264 yuv420p), DICOM US Multi-frame (pydicom), npz; plus the
ground-truth side files ``<clip>.gt.json`` and ``<clip>.masks.npz``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.stream.errors import ConfigError, SonoflowError

#: File extension of each format.
EXTENSIONS = {"mp4": ".mp4", "dicom": ".dcm", "npz": ".npz"}
#: Ultrasound Multi-frame Image Storage.
US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"


class WriteError(SonoflowError):
    """A clip or its truth could not be written."""


class Mp4Writer:
    """Streams grey frames into an H.264 mp4 (yuv420p, so every player and ffprobe reads it).

    Args:
        path: output file.
        height, width: frame size (even numbers, as yuv420p needs).
        fps: frame rate.

    Raises:
        ConfigError: odd frame size.
        WriteError: PyAV cannot open the file or the encoder.
    """

    def __init__(self, path: Path, height: int, width: int, fps: float):
        import av

        if height % 2 or width % 2:
            raise ConfigError(f"{path}: mp4 (yuv420p) needs an even frame size, got "
                              f"{width}x{height}; pass even --width/--height")
        self.path = path
        try:
            self._c = av.open(str(path), mode="w")
            self._s = self._c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        except (av.error.FFmpegError, ValueError) as e:
            raise WriteError(f"{path}: cannot open an H.264 mp4 writer: {e}") from e
        self._s.width, self._s.height = width, height
        self._s.pix_fmt = "yuv420p"
        self._s.options = {"crf": "18", "preset": "veryfast"}
        self._av = av

    def write(self, image: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Encode one ``(H, W)`` uint8 frame."""
        frame = self._av.VideoFrame.from_ndarray(image, format="gray").reformat(format="yuv420p")
        for pkt in self._s.encode(frame):
            self._c.mux(pkt)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        for pkt in self._s.encode():
            self._c.mux(pkt)
        self._c.close()


class NpzWriter:
    """Collects frames and writes ``frames (N, H, W) uint8`` with fps and mm/px on close."""

    def __init__(self, path: Path, height: int, width: int, fps: float,
                 mm_per_px: tuple[float, float], seed: int):
        self.path, self.fps, self.mm_per_px, self.seed = path, fps, mm_per_px, seed
        self._frames: list[np.ndarray] = []

    def write(self, image: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Keep one ``(H, W)`` uint8 frame."""
        self._frames.append(image)

    def close(self) -> None:
        """Write the compressed npz."""
        frames = np.stack(self._frames) if self._frames else np.zeros((0, 1, 1), np.uint8)
        np.savez_compressed(self.path, frames=frames, fps=np.float64(self.fps),
                            mm_per_px=np.asarray(self.mm_per_px, np.float64),
                            seed=np.int64(self.seed), schema=np.str_("sonoflow.sim/1"))


class DicomWriter:
    """Writes an Ultrasound Multi-frame Image (MONOCHROME2, 8 bit) with a Sequence of
    Ultrasound Regions carrying the pixel spacing (cm) and the sector's bounding box.

    Args:
        path: output ``.dcm`` file.
        height, width: frame size.
        fps: frame rate (Frame Time in ms).
        mm_per_px: ``(x, y)`` pixel spacing.
        region_xyxy: bounding box of the imaging sector, exclusive max, pixels.
        origin_px: pixel of the probe-face centre (the region's reference pixel).
        case: the case (fake patient identity, frequency).
    """

    def __init__(self, path: Path, height: int, width: int, fps: float,
                 mm_per_px: tuple[float, float], region_xyxy: tuple[int, int, int, int],
                 origin_px: tuple[float, float], case):
        self.path, self.h, self.w, self.fps = path, height, width, fps
        self.mm_per_px, self.region, self.origin, self.case = mm_per_px, region_xyxy, origin_px, case
        self._frames: list[np.ndarray] = []

    def write(self, image: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Keep one ``(H, W)`` uint8 frame."""
        self._frames.append(image)

    def close(self) -> None:
        """Build the dataset and write it.

        Raises:
            WriteError: the file cannot be written.
        """
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        case = self.case
        uid_root = f"seed{case.seed}-{self.h}x{self.w}-{len(self._frames)}"
        study_uid = generate_uid(entropy_srcs=[uid_root, "study"])
        series_uid = generate_uid(entropy_srcs=[uid_root, "series"])
        sop_uid = generate_uid(entropy_srcs=[uid_root, "sop"])
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = US_MULTIFRAME_SOP_CLASS
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = US_MULTIFRAME_SOP_CLASS
        ds.SOPInstanceUID = sop_uid
        date = case.patient.date.replace("-", "")
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "US"
        ds.Manufacturer = "SonoFlow simulator (synthetic)"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic liver ultrasound (simulated)"
        ds.SeriesDescription = f"sim seed {case.seed}"
        ds.PatientName = case.patient.name
        ds.PatientID = case.patient.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.BodyPartExamined = "LIVER"
        ds.InstanceNumber = 1
        ds.PatientOrientation = ""
        ds.BurnedInAnnotation = "YES" if case.ui else "NO"
        ds.LossyImageCompression = "00"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = self.h, self.w
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.NumberOfFrames = len(self._frames)
        ds.FrameTime = f"{1000.0 / self.fps:.4f}"
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.CineRate = int(round(self.fps))
        ds.RecommendedDisplayFrameRate = int(round(self.fps))
        reg = Dataset()
        x0, y0, x1, y1 = self.region
        reg.RegionSpatialFormat = 1  # 2D
        reg.RegionDataType = 1  # tissue
        reg.RegionFlags = 0
        reg.RegionLocationMinX0 = int(x0)
        reg.RegionLocationMinY0 = int(y0)
        reg.RegionLocationMaxX1 = int(x1) - 1  # inclusive in DICOM
        reg.RegionLocationMaxY1 = int(y1) - 1
        reg.ReferencePixelX0 = int(round(self.origin[0]))
        reg.ReferencePixelY0 = int(round(self.origin[1]))
        reg.PhysicalUnitsXDirection = 3  # cm
        reg.PhysicalUnitsYDirection = 3
        reg.ReferencePixelPhysicalValueX = 0.0
        reg.ReferencePixelPhysicalValueY = 0.0
        reg.PhysicalDeltaX = float(self.mm_per_px[0]) / 10.0
        reg.PhysicalDeltaY = float(self.mm_per_px[1]) / 10.0
        reg.TransducerFrequency = int(round(case.probe.freq_mhz * 1000))
        ds.SequenceOfUltrasoundRegions = Sequence([reg])
        frames = np.stack(self._frames) if self._frames else np.zeros((0, self.h, self.w),
                                                                       np.uint8)
        ds.PixelData = frames.tobytes()
        try:
            ds.save_as(self.path, enforce_file_format=True)
        except (OSError, ValueError) as e:
            raise WriteError(f"{self.path}: cannot write DICOM: {e}") from e


def write_truth(stem: Path, document: dict[str, Any], masks: dict[str, np.ndarray]) -> tuple[
        Path, Path]:
    """Write ``<stem>.gt.json`` and ``<stem>.masks.npz``.

    Args:
        stem: clip path without extension.
        document: the ground-truth document (:func:`~sonoflow.stream.sim.truth.clip_document`).
        masks: ``lesion_ids`` and ``tissue`` ``(N, H, W)`` uint8, ``ui_text_mask`` ``(N, H, W)``
            bool, ``sector_mask`` ``(H, W)`` bool.

    Returns:
        The two paths.

    Raises:
        WriteError: a file cannot be written.
    """
    gt = stem.with_name(stem.name + ".gt.json")
    mk = stem.with_name(stem.name + ".masks.npz")
    doc = dict(document)
    doc["masks_file"] = mk.name
    try:
        gt.write_text(json.dumps(doc, indent=1))
        np.savez_compressed(mk, **masks)
    except OSError as e:
        raise WriteError(f"{gt}: cannot write ground truth: {e}") from e
    return gt, mk
