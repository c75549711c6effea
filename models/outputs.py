"""Decoded model outputs as validated numpy structs (no torch, no stream imports).

Coordinates carry their frame in the name: ``xyxy_px`` are pixels of the frame the struct was
mapped to (model input after decoding, original frame after :meth:`Detections.mapped`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """N lesion candidates as a struct of arrays.

    Attributes:
        xyxy_px: (N, 4) float32 boxes (x0, y0, x1, y1), exclusive corner.
        confidence: (N,) float32 heatmap peak values in [0, 1].
        center_px: (N, 2) float32 box centres (x, y).
    """

    xyxy_px: np.ndarray
    confidence: np.ndarray
    center_px: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.xyxy_px = np.asarray(self.xyxy_px, np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(-1)
        if self.center_px is None:
            self.center_px = np.stack([(self.xyxy_px[:, 0] + self.xyxy_px[:, 2]) / 2,
                                       (self.xyxy_px[:, 1] + self.xyxy_px[:, 3]) / 2], axis=1)
        self.center_px = np.asarray(self.center_px, np.float32).reshape(-1, 2)
        n = len(self.xyxy_px)
        if len(self.confidence) != n or len(self.center_px) != n:
            raise ValueError(f"Detections: {n} boxes but {len(self.confidence)} confidences "
                             f"and {len(self.center_px)} centres")

    def __len__(self) -> int:
        return len(self.xyxy_px)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def subset(self, keep: np.ndarray) -> Detections:
        """The detections selected by an index or boolean array."""
        return Detections(self.xyxy_px[keep], self.confidence[keep], self.center_px[keep])


@dataclass
class FrameOutputs:
    """Everything the frame network says about one frame, in model-input pixels.

    Attributes:
        detections: lesion candidates (input pixels).
        lesion_prob: (h, w) float32 lesion-mask probability on the network's mask grid (an
            integer fraction of the input, e.g. 128 x 128 for a 256 x 256 input).
        liver_prob: (h, w) float32 liver-mask probability, same grid.
        steatosis_probs: (4,) float32, S0..S3.
        fibrosis_probs: (5,) float32, F0..F4.
    """

    detections: Detections
    lesion_prob: np.ndarray
    liver_prob: np.ndarray
    steatosis_probs: np.ndarray
    fibrosis_probs: np.ndarray


@dataclass
class ClassifierOutputs:
    """Crop-classifier outputs for N crops (probabilities).

    Attributes:
        type_probs: (N, 5) float32 over the lesion types.
        malignancy: (N,) float32 probability of malignancy.
        feature_probs: (N, 7) float32 independent feature probabilities.
    """

    type_probs: np.ndarray
    malignancy: np.ndarray
    feature_probs: np.ndarray
