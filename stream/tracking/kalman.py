"""A constant-velocity Kalman filter over one box, in original-frame pixels.

State ``x`` (8,): ``[cx_px, cy_px, w_px, h_px, vcx, vcy, vw, vh]`` (velocities in px per
update). Measurement ``z`` (4,): ``[cx_px, cy_px, w_px, h_px]``. Noise scales with the box size
(as in ByteTrack / DeepSORT), so a 10 px nodule and a 200 px mass are treated alike.

One filter per track; nothing is shared between instances.
"""

from __future__ import annotations

import numpy as np

# Process / measurement noise as fractions of the box height (DeepSORT's weights).
_STD_POSITION = 1.0 / 20.0
_STD_VELOCITY = 1.0 / 160.0
_DIM = 4


def xyxy_to_cxcywh(xyxy_px: np.ndarray) -> np.ndarray:
    """Convert ``(4,)`` or ``(N, 4)`` ``[x0, y0, x1, y1]`` boxes to ``[cx, cy, w, h]`` (px)."""
    b = np.asarray(xyxy_px, dtype=np.float64)
    out = np.empty_like(b)
    out[..., 0] = (b[..., 0] + b[..., 2]) / 2.0
    out[..., 1] = (b[..., 1] + b[..., 3]) / 2.0
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def cxcywh_to_xyxy(cxcywh_px: np.ndarray) -> np.ndarray:
    """Convert ``(4,)`` or ``(N, 4)`` ``[cx, cy, w, h]`` boxes to ``[x0, y0, x1, y1]`` (px)."""
    b = np.asarray(cxcywh_px, dtype=np.float64)
    out = np.empty_like(b)
    out[..., 0] = b[..., 0] - b[..., 2] / 2.0
    out[..., 1] = b[..., 1] - b[..., 3] / 2.0
    out[..., 2] = b[..., 0] + b[..., 2] / 2.0
    out[..., 3] = b[..., 1] + b[..., 3] / 2.0
    return out


class BoxKalman:
    """Constant-velocity Kalman filter of one box.

    Args:
        xyxy_px: the first measurement, ``(4,)`` ``[x0, y0, x1, y1]`` in pixels.
        velocity_decay: factor applied to the velocity at each prediction made without a
            measurement (a lost lesion is assumed to stop, not to fly off along its last
            velocity: during a sweep it leaves the plane and re-enters near where it was).
    """

    def __init__(self, xyxy_px: np.ndarray, velocity_decay: float = 0.5):
        z = xyxy_to_cxcywh(xyxy_px)
        self.velocity_decay = float(velocity_decay)
        self.x = np.concatenate([z, np.zeros(_DIM)])
        scale = max(z[3], z[2], 1.0)
        std = np.array([2 * _STD_POSITION * scale] * _DIM + [10 * _STD_VELOCITY * scale] * _DIM)
        self.P = np.diag(std ** 2)
        self._F = np.eye(2 * _DIM)
        self._F[:_DIM, _DIM:] = np.eye(_DIM)
        self._H = np.eye(_DIM, 2 * _DIM)
        self._misses = 0

    @property
    def xyxy_px(self) -> np.ndarray:
        """The current state as a ``(4,)`` ``[x0, y0, x1, y1]`` box (px)."""
        box = self.x[:_DIM].copy()
        box[2:] = np.maximum(box[2:], 1.0)
        return cxcywh_to_xyxy(box)

    def predict(self) -> np.ndarray:
        """Advance one update step; return the predicted ``(4,)`` xyxy box (px)."""
        if self._misses > 0:
            self.x[_DIM:] *= self.velocity_decay
        scale = max(self.x[3], self.x[2], 1.0)
        q = np.array([_STD_POSITION * scale] * _DIM + [_STD_VELOCITY * scale] * _DIM) ** 2
        self.x = self._F @ self.x
        self.P = self._F @ self.P @ self._F.T + np.diag(q)
        self._misses += 1
        return self.xyxy_px

    def update(self, xyxy_px: np.ndarray) -> None:
        """Correct the state with a measured ``(4,)`` xyxy box (px)."""
        z = xyxy_to_cxcywh(xyxy_px)
        scale = max(self.x[3], self.x[2], 1.0)
        r = np.diag(np.full(_DIM, (_STD_POSITION * scale) ** 2))
        s = self._H @ self.P @ self._H.T + r
        k = np.linalg.solve(s, self._H @ self.P).T  # P H^T S^-1 (S symmetric)
        self.x = self.x + k @ (z - self._H @ self.x)
        self.P = (np.eye(2 * _DIM) - k @ self._H) @ self.P
        self._misses = 0
