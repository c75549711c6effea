"""``mask_instances``: detection boxes refined to the lesion mask's connected components."""

from __future__ import annotations

import cv2
import numpy as np

from sonoflow.models.postprocess import instance_mask, mask_instances


def _disc(shape, centre, radius) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, centre, radius, 1, -1)
    return m.astype(bool)


def test_a_box_half_the_lesion_grows_to_the_whole_component():
    lesion = _disc((200, 300), (150, 100), 40)  # bbox x 110..190, y 60..140
    small = np.array([[130.0, 80.0, 170.0, 120.0]])
    ids, boxes, refined = mask_instances(lesion, small)
    assert refined.tolist() == [True]
    np.testing.assert_allclose(boxes[0], [110, 60, 191, 141])
    assert np.array_equal(ids == 1, lesion)  # the whole disc, not the box's inside
    # the old, box-clipped instance keeps only the pixels inside the box
    assert (instance_mask(lesion, small) == 1).sum() < 0.5 * lesion.sum()


def test_a_box_larger_than_the_lesion_shrinks_to_it():
    lesion = _disc((200, 300), (150, 100), 20)
    ids, boxes, refined = mask_instances(lesion, np.array([[115.0, 65.0, 185.0, 135.0]]))
    assert refined[0] and np.allclose(boxes[0], [130, 80, 171, 121])


def test_a_second_peak_on_the_same_lesion_keeps_its_box_and_takes_nothing():
    lesion = _disc((200, 300), (150, 100), 30)
    dets = np.array([[125.0, 75.0, 175.0, 125.0], [140.0, 90.0, 160.0, 110.0]])
    ids, boxes, refined = mask_instances(lesion, dets)
    assert refined.tolist() == [True, False]
    np.testing.assert_allclose(boxes[1], dets[1])
    assert (ids == 2).sum() == 0 and np.array_equal(ids == 1, lesion)


def test_two_lesions_get_two_instances():
    lesion = _disc((200, 300), (70, 100), 20) | _disc((200, 300), (220, 100), 25)
    dets = np.array([[205.0, 85.0, 235.0, 115.0], [55.0, 85.0, 85.0, 115.0]])
    ids, boxes, refined = mask_instances(lesion, dets)
    assert refined.all()
    assert np.array_equal(ids == 1, _disc((200, 300), (220, 100), 25))
    assert np.array_equal(ids == 2, _disc((200, 300), (70, 100), 20))


def test_a_component_beyond_max_scale_is_not_trusted():
    lesion = np.zeros((200, 300), bool)
    lesion[50:150, 20:280] = True  # the mask has run along a structure 13x the box's width
    det = np.array([[140.0, 90.0, 160.0, 110.0]])
    ids, boxes, refined = mask_instances(lesion, det, max_scale=2.5)
    assert not refined[0]
    np.testing.assert_allclose(boxes[0], det[0])
    assert np.array_equal(ids, instance_mask(lesion, det))  # the box-clipped fallback


def test_no_lesion_pixels_leaves_the_boxes_and_an_empty_mask():
    det = np.array([[10.0, 10.0, 40.0, 40.0]])
    ids, boxes, refined = mask_instances(np.zeros((100, 100), bool), det)
    assert not ids.any() and not refined.any() and np.allclose(boxes, det)
