"""The "nobody could see it" rule for simulated lesions, and how training/evaluation ignore them."""

import numpy as np
import pytest
import torch

from sonoflow.training.data.visibility import lesion_visibility
from sonoflow.training.tasks.frame import (
    _min_pool,
    drop_on_ignored,
    focal_loss,
    ignore_weight,
)

S = 256


def _scene(background: float, lesion: float, halo: float | None = None, seed: int = 0):
    """A speckled frame with one 24-px disc lesion at (128, 128); its id map on the mask grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S]
    r = np.hypot(xx - 128, yy - 128)
    img = np.full((S, S), background, np.float32)
    img[r <= 12] = lesion
    if halo is not None:
        img[(r > 9) & (r <= 12)] = halo
    img = np.clip(img * rng.gamma(8.0, 1 / 8.0, img.shape), 0, 255).astype(np.uint8)
    ids = np.zeros((S // 2, S // 2), np.uint8)
    ids[np.hypot(xx[::2, ::2] - 128, yy[::2, ::2] - 128) <= 12] = 1
    return img, ids, np.array([[116, 116, 140, 140]], np.float32)


@pytest.mark.parametrize("background,lesion,halo,visible", [
    (110, 40, None, True),    # hypoechoic: plain contrast
    (110, 200, None, True),   # hyperechoic
    (110, 110, 30, True),     # target lesion: interior like the parenchyma, dark rim
    (110, 110, None, False),  # isoechoic: nothing to see
    (0, 40, None, False),     # no echo around it (shadow, beyond penetration)
])
def test_visibility_rule(background, lesion, halo, visible):
    img, ids, box = _scene(background, lesion, halo)
    vis, contrast = lesion_visibility(img, ids, box)
    assert bool(vis[0]) is visible, contrast


def test_box_outside_the_input_is_not_visible():
    img, ids, _ = _scene(110, 40)
    vis, _ = lesion_visibility(img, ids, np.array([[300, 300, 320, 320]], np.float32))
    assert not vis[0]


def test_ignore_weight_and_min_pool_cover_the_grown_box():
    w = ignore_weight(np.array([[100, 100, 120, 120]], np.float32), S)
    assert w[110, 110] == 0 and w[96, 96] == 0 and w[60, 60] == 1
    grid = _min_pool(w[None], 4)[0]
    assert grid.shape == (64, 64) and grid[27, 27] == 0 and grid[10, 10] == 1


def test_detections_on_ignored_lesions_are_dropped_but_not_on_visible_ones():
    pred = np.array([[100, 100, 120, 120], [10, 10, 30, 30], [200, 200, 220, 220]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    visible = np.array([[10, 10, 30, 30]], np.float32)
    ignored = np.array([[98, 98, 122, 122]], np.float32)
    p, s = drop_on_ignored(pred, scores, visible, ignored, 0.5)
    assert p.tolist() == pred[1:].tolist() and s.tolist() == pytest.approx([0.8, 0.7])


def test_focal_loss_does_not_learn_from_ignored_cells():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 4, 4] = 1.0
    logits = torch.full((1, 1, 8, 8), -4.0, requires_grad=True)
    weight = torch.ones(1, 1, 8, 8)
    weight[0, 0, 3:6, 3:6] = 0
    loss = focal_loss(logits, target, weight)
    loss.backward()
    assert logits.grad[0, 0, 4, 4] == 0 and logits.grad[0, 0, 0, 0] != 0
    assert loss < focal_loss(logits.detach(), target)
