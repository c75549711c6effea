"""Loaders for real (non-simulated) lesion data in the forms hospitals and datasets use.

Every loader returns a list of :class:`RealImage`: one grey image, its lesions (boxes in
exclusive ``xyxy_px``, a benign/malignant label when known, an optional type) and a union
lesion mask. Supported forms:

* **The ``liver_lesions`` layout** (``ground_truth.json`` + ``images/`` + ``masks/``; masks RGB:
  green = benign, red = malignant; boxes ``x0, y0, x1, y1`` *inclusive*, converted here to the
  exclusive convention used everywhere else): :func:`load_liver_lesions`.
* **Image + mask folders** (``images/<stem>.<ext>`` with ``masks/<stem>.<ext>``; a grey or
  binary mask is "lesion of unknown label"; an RGB mask uses the green/red convention above;
  one lesion per 8-connected component): :func:`load_image_mask_folders`.
* **COCO-style box JSON** (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]`` and
  optional polygon ``segmentation``, ``categories``; image files may be PNG/JPEG or DICOM):
  :func:`load_coco`.
* **DICOM** images (single- or multi-frame; YBR/RGB/palette converted to grey once; mm/px from
  the Sequence of Ultrasound Regions when it is valid): :func:`read_dicom_grey`,
  :func:`load_dicom_folder` (images without annotations, e.g. for false-positive counts).

:func:`load_real_dataset` picks the loader from what is on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sonoflow.stream.errors import SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
# Names that count as malignant in COCO categories / labels (lower case).
MALIGNANT_NAMES = frozenset({"malignant", "metastasis", "hcc", "cancer", "carcinoma",
                             "hepatocellular carcinoma", "cholangiocarcinoma"})
BENIGN_NAMES = frozenset({"benign", "cyst", "hemangioma", "haemangioma", "fnh", "adenoma",
                          "focal nodular hyperplasia", "fat_sparing", "focal fat sparing"})
TYPE_NAMES = frozenset({"cyst", "hemangioma", "metastasis", "hcc"})
MIN_COMPONENT_PX = 20  # the liver_lesions ground truth drops components below this too


@dataclass
class RealLesion:
    """One annotated lesion.

    Attributes:
        xyxy_px: (x0, y0, x1, y1) exclusive pixel box in the image.
        malignant: True/False, or None when the annotation does not say.
        label: the annotation's own label text ("benign", "malignant", "cyst", ...).
        lesion_type: one of cyst/hemangioma/metastasis/hcc when the label names one, else None.
    """

    xyxy_px: tuple[int, int, int, int]
    malignant: bool | None
    label: str
    lesion_type: str | None = None


@dataclass
class RealImage:
    """One real image with its annotations.

    Attributes:
        image: (H, W) uint8 grey image.
        lesions: annotated lesions.
        lesion_mask: (H, W) bool union of the lesion masks, or None when only boxes exist.
        path: the image file.
        image_label: the image-level label ("benign"/"malignant"/... or "" when absent).
        mm_per_px: (x, y) pixel spacing in mm when the file calibrates it, else None.
    """

    image: np.ndarray
    lesions: list[RealLesion]
    lesion_mask: np.ndarray | None
    path: Path
    image_label: str = ""
    mm_per_px: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- pixels -----


def read_image_grey(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/... (or DICOM) file as (H, W) uint8 grey.

    Colour images are converted with ITU-R BT.601 luma (OpenCV's ``COLOR_BGR2GRAY``);
    16-bit images are scaled to 8 bits by their maximum.

    Raises:
        SourceError: the file is missing, unreadable or not an image.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return read_dicom_grey(path)[0]
    if not path.is_file():
        raise SourceError(str(path), "image file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SourceError(str(path), "OpenCV cannot decode this file as an image "
                                     f"(expected one of {IMAGE_SUFFIXES})")
    return _to_grey_u8(img, path, bgr=True)


def _to_grey_u8(img: np.ndarray, path: Path, bgr: bool) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img),
                           cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2:
        raise SourceError(str(path), f"expected a grey or RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        peak = float(img.max()) if img.size else 0.0
        img = (np.clip(img.astype(np.float64) / peak, 0, 1) * 255 if peak > 0
               else np.zeros(img.shape)).astype(np.uint8)
    return np.ascontiguousarray(img)


def read_dicom_grey(path: str | Path, frame: int = 0
                    ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read one frame of a DICOM image as grey, with its pixel spacing.

    pydicom 3 converts YBR to RGB while decoding (the header still says YBR), so colour is
    converted exactly once here; PALETTE COLOR is expanded through its LUT first.

    Args:
        path: the DICOM file.
        frame: frame index for multi-frame files.

    Returns:
        ``(image (H, W) uint8, mm_per_px (x, y) or None)``; the spacing comes from the first
        Sequence of Ultrasound Regions item with cm units whose box lies inside the image, else
        PixelSpacing, else None.

    Raises:
        SourceError: missing file, no pixel data, missing decoder, or frame out of range.
    """
    import pydicom  # runtime dependency; imported here so importing this module stays cheap
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except (OSError, InvalidDicomError) as e:
        raise SourceError(str(path), f"cannot read as DICOM ({e})") from e
    if "PixelData" not in ds:
        raise SourceError(str(path), "DICOM file has no Pixel Data (7FE0,0010)")
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if not 0 <= frame < n_frames:
        raise SourceError(str(path), f"frame {frame} out of range: the file has {n_frames}")
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as e:
        raise SourceError(str(path), f"cannot decode pixel data with transfer syntax "
                                     f"{ds.file_meta.TransferSyntaxUID.name} ({e}); install "
                                     "pylibjpeg with its libjpeg/openjpeg plugins") from e
    if n_frames > 1:
        arr = arr[frame]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr
    grey = _to_grey_u8(np.asarray(arr), path, bgr=False)
    return grey, _dicom_spacing_mm(ds, grey.shape)


def _dicom_spacing_mm(ds, shape: tuple[int, int]) -> tuple[float, float] | None:
    h, w = shape
    for region in getattr(ds, "SequenceOfUltrasoundRegions", []) or []:
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
            units = (int(region.PhysicalUnitsXDirection), int(region.PhysicalUnitsYDirection))
            dx, dy = float(region.PhysicalDeltaX), float(region.PhysicalDeltaY)
        except AttributeError:
            continue
        # 3 = cm; pydicom's own examples include regions lying outside the image: skip them.
        if units == (3, 3) and 0 <= x0 < x1 < w and 0 <= y0 < y1 < h and dx > 0 and dy > 0:
            return (abs(dx) * 10.0, abs(dy) * 10.0)
    spacing = getattr(ds, "PixelSpacing", None)
    if spacing is not None and len(spacing) == 2 and float(spacing[0]) > 0:
        return (float(spacing[1]), float(spacing[0]))  # PixelSpacing is (row, column)
    return None


def _components(mask: np.ndarray) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """8-connected components >= MIN_COMPONENT_PX as (exclusive box, component mask)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area >= MIN_COMPONENT_PX:
            out.append(((x, y, x + w, y + h), labels == k))
    return out


def _colour_masks(mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(benign, malignant) bool masks from an RGB mask (green benign, red malignant)."""
    m = cv2.imread(str(mask_path), cv2.IMREAD_COLOR)
    if m is None:
        raise SourceError(str(mask_path), "mask file missing or not an image")
    b, g, r = (m[:, :, i].astype(np.int16) for i in range(3))
    benign = (g >= 128) & (r < 128) & (b < 128)
    malignant = (r >= 128) & (g < 128) & (b < 128)
    return benign, malignant


def _label_flags(label: str) -> tuple[bool | None, str | None]:
    low = label.strip().lower()
    malignant = True if low in MALIGNANT_NAMES else False if low in BENIGN_NAMES else None
    return malignant, (low if low in TYPE_NAMES else None)


# ------------------------------------------------------------------------------ loaders -----


def load_liver_lesions(root: str | Path) -> list[RealImage]:
    """Load the ``liver_lesions`` layout (``ground_truth.json``, ``images/``, ``masks/``).

    Boxes come from the JSON (inclusive corners, converted to exclusive); the union mask from
    the RGB mask (any green or red pixel).

    Raises:
        SourceError: missing/malformed ``ground_truth.json`` or a referenced file.
    """
    root = Path(root)
    gt_path = root / "ground_truth.json"
    try:
        gt = json.loads(gt_path.read_text())
        entries = gt["images"]
    except OSError as e:
        raise SourceError(str(gt_path), f"cannot read ground truth ({e.strerror})") from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SourceError(str(gt_path), f"expected a JSON object with an 'images' list ({e})") from e
    out = []
    for entry in entries:
        try:
            image_path, mask_path = root / entry["image"], root / entry["mask"]
            raw_lesions = entry["lesions"]
        except KeyError as e:
            raise SourceError(str(gt_path), f"image entry lacks key {e}; expected 'image', "
                                            "'mask' and 'lesions'") from e
        image = read_image_grey(image_path)
        benign, malignant = _colour_masks(mask_path)
        if benign.shape != image.shape:
            raise SourceError(str(mask_path), f"mask is {benign.shape}, image is {image.shape}")
        lesions = []
        for les in raw_lesions:
            x0, y0, x1, y1 = (int(v) for v in les["bbox_xyxy"])
            label = str(les["label"])
            flag, typ = _label_flags(label)
            lesions.append(RealLesion((x0, y0, x1 + 1, y1 + 1), flag, label, typ))
        out.append(RealImage(image, lesions, benign | malignant, image_path,
                             str(entry.get("image_label", ""))))
    return out


def load_image_mask_folders(root: str | Path, images_dir: str = "images",
                            masks_dir: str = "masks") -> list[RealImage]:
    """Load ``images/<stem>.*`` with ``masks/<stem>.*`` (same stem).

    A mask that is RGB with green/red pixels gives benign/malignant lesions; any other mask
    gives lesions of unknown malignancy (non-zero = lesion). One lesion per 8-connected
    component of at least 20 px.

    Raises:
        SourceError: a folder is missing, or an image has no mask of the same stem and shape.
    """
    root = Path(root)
    idir, mdir = root / images_dir, root / masks_dir
    for d in (idir, mdir):
        if not d.is_dir():
            raise SourceError(str(d), f"folder not found; expected {images_dir}/ and "
                                      f"{masks_dir}/ under {root}")
    masks = {p.stem: p for p in mdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    out = []
    for ipath in sorted(p for p in idir.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES):
        if ipath.stem not in masks:
            raise SourceError(str(ipath), f"no mask named {ipath.stem}.* in {mdir}")
        image = read_image_grey(ipath)
        mpath = masks[ipath.stem]
        raw = cv2.imread(str(mpath), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise SourceError(str(mpath), "mask cannot be decoded as an image")
        if raw.shape[:2] != image.shape:
            raise SourceError(str(mpath), f"mask is {raw.shape[:2]}, image is {image.shape}")
        lesions: list[RealLesion] = []
        if raw.ndim == 3 and raw.shape[2] >= 3:
            benign, malignant = _colour_masks(mpath)
            coloured = benign | malignant
            if coloured.any():
                for flag, m in ((False, benign), (True, malignant)):
                    for box, _ in _components(m):
                        lesions.append(RealLesion(box, flag, "malignant" if flag else "benign"))
                union = coloured
            else:
                union = raw[:, :, :3].max(axis=2) > 0
        else:
            union = raw > 0
        if not lesions:
            lesions = [RealLesion(box, None, "lesion") for box, _ in _components(union)]
        label = ("malignant" if any(les.malignant for les in lesions) else
                 "benign" if lesions and all(les.malignant is False for les in lesions) else "")
        out.append(RealImage(image, lesions, union, ipath, label))
    return out


def load_coco(json_path: str | Path, image_root: str | Path | None = None) -> list[RealImage]:
    """Load a COCO-style detection file.

    ``bbox`` is ``[x, y, w, h]`` in pixels; a polygon ``segmentation`` (list of flat x, y
    lists) is rasterised into the union mask; RLE segmentations are ignored (boxes still load).
    Category names decide malignancy (see ``MALIGNANT_NAMES`` / ``BENIGN_NAMES``); unknown
    names leave it None. Image files are read relative to ``image_root`` (default: the JSON's
    folder) and may be DICOM.

    Raises:
        SourceError: malformed JSON, missing keys, or an annotation naming an unknown image.
    """
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    try:
        coco = json.loads(json_path.read_text())
        images = {int(im["id"]): im for im in coco["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
        anns = coco.get("annotations", [])
    except OSError as e:
        raise SourceError(str(json_path), f"cannot read ({e.strerror})") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SourceError(str(json_path), f"not COCO-style JSON: expected 'images' with 'id' "
                                          f"and 'file_name' ({e})") from e
    by_image: dict[int, list[dict]] = {k: [] for k in images}
    for ann in anns:
        iid = int(ann.get("image_id", -1))
        if iid not in by_image:
            raise SourceError(str(json_path), f"annotation {ann.get('id')} names image_id "
                                              f"{iid}, which is not in 'images'")
        by_image[iid].append(ann)
    out = []
    for iid, im in sorted(images.items()):
        ipath = root / im["file_name"]
        image = read_image_grey(ipath)
        mask = np.zeros(image.shape, bool)
        has_poly = False
        lesions = []
        for ann in by_image[iid]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            label = cats.get(int(ann.get("category_id", -1)), "lesion")
            flag, typ = _label_flags(label)
            box = (int(np.floor(x)), int(np.floor(y)), int(np.ceil(x + w)), int(np.ceil(y + h)))
            lesions.append(RealLesion(box, flag, label, typ))
            seg = ann.get("segmentation")
            if isinstance(seg, list) and seg:
                for poly in seg:
                    pts = np.asarray(poly, np.float64).reshape(-1, 2)
                    layer = np.zeros(image.shape, np.uint8)
                    cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 1)
                    mask |= layer.astype(bool)
                    has_poly = True
        label = ("malignant" if any(les.malignant for les in lesions) else
                 "benign" if lesions and all(les.malignant is False for les in lesions) else "")
        out.append(RealImage(image, lesions, mask if has_poly else None, ipath, label))
    return out


def load_dicom_folder(root: str | Path, frames: Iterable[int] = (0,)) -> list[RealImage]:
    """Load every DICOM file under ``root`` (no annotations: lesions empty, mask None).

    Raises:
        SourceError: the folder holds no ``.dcm`` file, or one cannot be decoded.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES)
    if not files:
        raise SourceError(str(root), f"no DICOM files ({'/'.join(DICOM_SUFFIXES)}) found")
    out = []
    for p in files:
        for k in frames:
            image, spacing = read_dicom_grey(p, k)
            out.append(RealImage(image, [], None, p, "", spacing, {"frame": k}))
    return out


def load_real_dataset(path: str | Path) -> list[RealImage]:
    """Load real data from ``path``, choosing the loader by what is there.

    * a folder with ``ground_truth.json`` -> :func:`load_liver_lesions`;
    * a ``.json`` file, or a folder with ``annotations.json`` -> :func:`load_coco`;
    * a folder with ``images/`` and ``masks/`` -> :func:`load_image_mask_folders`;
    * a DICOM file or a folder of them -> :func:`load_dicom_folder` (unannotated).

    Raises:
        SourceError: nothing recognisable at ``path`` (the message lists the forms).
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return load_coco(path)
    if path.is_file() and path.suffix.lower() in DICOM_SUFFIXES:
        image, spacing = read_dicom_grey(path)
        return [RealImage(image, [], None, path, "", spacing, {"frame": 0})]
    if path.is_dir():
        if (path / "ground_truth.json").is_file():
            return load_liver_lesions(path)
        if (path / "annotations.json").is_file():
            return load_coco(path / "annotations.json")
        if (path / "images").is_dir() and (path / "masks").is_dir():
            return load_image_mask_folders(path)
        if any(p.suffix.lower() in DICOM_SUFFIXES for p in path.rglob("*")):
            return load_dicom_folder(path)
    raise SourceError(str(path), "no real-data layout recognised; expected ground_truth.json + "
                                 "images/ + masks/, a COCO .json (or annotations.json), images/ + "
                                 "masks/ folders, or DICOM files")
