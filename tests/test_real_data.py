"""Real-data loaders: every supported form on small files written here, plus the shared
``liver_lesions`` folder when it is present (skips cleanly otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sonoflow.stream.errors import SourceError
from sonoflow.training.data import real

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _write_pair(root: Path, stem: str, colour_bgr: tuple[int, int, int] | None, rgb: bool = True):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    img = np.full((60, 80), 90, np.uint8)
    img[20:30, 10:25] = 30
    cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
    if rgb:
        mask = np.zeros((60, 80, 3), np.uint8)
        mask[20:30, 10:25] = colour_bgr
    else:
        mask = np.zeros((60, 80), np.uint8)
        mask[20:30, 10:25] = 255
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)


@pytest.mark.parametrize("colour,rgb,expected", [
    ((0, 255, 0), True, False),   # green = benign (BGR on disk)
    ((0, 0, 255), True, True),    # red = malignant
    (None, False, None),          # binary mask: malignancy unknown
])
def test_image_mask_folders(tmp_path, colour, rgb, expected):
    _write_pair(tmp_path, "a", colour, rgb)
    (item,) = real.load_real_dataset(tmp_path)
    assert item.image.shape == (60, 80) and item.image.dtype == np.uint8
    (les,) = item.lesions
    assert les.xyxy_px == (10, 20, 25, 30)
    assert les.malignant is expected
    assert int(item.lesion_mask.sum()) == 150


def test_image_without_mask_is_an_error(tmp_path):
    _write_pair(tmp_path, "a", (0, 255, 0))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(SourceError, match="no mask named b"):
        real.load_image_mask_folders(tmp_path)


def test_coco_boxes_and_polygons(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((50, 40, 3), np.uint8))
    coco = {"images": [{"id": 7, "file_name": "x.png", "width": 40, "height": 50}],
            "categories": [{"id": 1, "name": "HCC"}, {"id": 2, "name": "cyst"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 6, 10.5, 4],
                 "segmentation": [[5, 6, 15, 6, 15, 10, 5, 10]]},
                {"id": 2, "image_id": 7, "category_id": 2, "bbox": [20, 20, 5, 5]}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (item,) = real.load_real_dataset(tmp_path / "ann.json")
    a, b = item.lesions
    assert a.xyxy_px == (5, 6, 16, 10) and a.malignant is True and a.lesion_type == "hcc"
    assert b.malignant is False and b.lesion_type == "cyst"
    assert item.image_label == "malignant"
    assert item.lesion_mask[8, 10] and not item.lesion_mask[22, 22]
    coco["annotations"][1]["image_id"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(SourceError, match="image_id 99"):
        real.load_coco(tmp_path / "bad.json")


def test_dicom_roundtrip_with_regions(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = 32, 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pix = (np.arange(32 * 48) % 251).astype(np.uint8).reshape(32, 48)
    ds.PixelData = pix.tobytes()
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 2, 2
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 40, 30
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.025
    ds.SequenceOfUltrasoundRegions = [region]
    path = tmp_path / "one.dcm"
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    (item,) = real.load_real_dataset(path)
    np.testing.assert_array_equal(item.image, pix)
    assert item.mm_per_px == pytest.approx((0.2, 0.25))
    region.RegionLocationMaxX1 = 4000  # a region outside the image must be ignored
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    assert real.read_dicom_grey(path)[1] is None
    with pytest.raises(SourceError, match="frame 3 out of range"):
        real.read_dicom_grey(path, frame=3)


def test_unrecognised_folder(tmp_path):
    with pytest.raises(SourceError, match="no real-data layout recognised"):
        real.load_real_dataset(tmp_path)


def test_shared_liver_lesions_folder():
    root = REAL / "liver_lesions"
    if not (root / "ground_truth.json").is_file():
        pytest.skip(f"real data folder {root} is absent (a fresh clone has no ../shared)")
    items = real.load_real_dataset(root)
    assert len(items) == 18
    assert sum(i.image_label == "malignant" for i in items) == 8
    for item in items:
        assert item.image.ndim == 2 and item.lesion_mask.shape == item.image.shape
        for les in item.lesions:
            x0, y0, x1, y1 = les.xyxy_px
            # Inclusive JSON boxes became exclusive: the mask touches every edge of the box.
            sub = item.lesion_mask[y0:y1, x0:x1]
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
            assert les.malignant == (item.image_label == "malignant")


def test_shipped_classifier_on_shared_liver_lesions(tmp_path):
    """`sonoflow eval` on the real folder with the shipped classifier (no torch needed)."""
    root = REAL / "liver_lesions"
    if not (root / "ground_truth.json").is_file():
        pytest.skip(f"real data folder {root} is absent (a fresh clone has no ../shared)")
    from sonoflow.models.registry import available
    from sonoflow.training.evaluate import evaluate_real_folder

    if ("lesion-cls-v1", "fp32") not in {(m, p) for m, p, _ in available()}:
        pytest.skip("lesion-cls-v1-fp32 is not shipped in models/weights")
    rep = evaluate_real_folder(root, tmp_path, "lesion-cls-v1", None, n_boot=200)
    c = rep["classifier"]
    assert (c["n_malignant"], c["n_benign"]) == (8, 10)
    assert 0.0 <= c["auc"]["value"] <= 1.0 and c["auc"]["n"] == 18
    assert (tmp_path / "real_eval.json").exists()
    assert (tmp_path / "real_malignancy_roc.png").stat().st_size > 1000
