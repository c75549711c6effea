"""The lesion crop classifier: a small residual CNN with three heads (torch).

Input: (N, 1, 64, 64) float32, a square grey crop centred on a detection's box (side = the
box's longer side x the card's ``crop_margin``), normalised as the card says.

Outputs (ONNX names in :data:`OUTPUT_NAMES`):

* ``type_logits``    (N, 5): lesion type, :data:`LESION_TYPES` order (softmax for probabilities);
* ``malignancy_logit`` (N, 1): malignant vs benign (sigmoid);
* ``feature_logits`` (N, 7): B-mode features, :data:`LESION_FEATURES` order (independent
  sigmoids, multi-label).

Cost at 64x64: about 0.05 GFLOPs (2 x multiply-accumulates) and 0.2 M parameters
(:func:`count_gflops` measures it), under the 0.1 GFLOPs budget of issue 5.
"""

from __future__ import annotations

import torch
from torch import nn

LESION_TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
LESION_FEATURES = ("anechoic", "hyperechoic", "hypoechoic", "halo_target",
                   "posterior_enhancement", "mosaic", "well_defined")
INPUT_NAME = "crop"
OUTPUT_NAMES = ("type_logits", "malignancy_logit", "feature_logits")
CROP_SIZE_PX = 64


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    """x + BN(conv3x3(x)), then ReLU: one extra 3x3 at constant width."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.bn(self.conv(x)))


class LesionClassifier(nn.Module):
    """Crop classifier with type, malignancy and B-mode feature heads.

    Args:
        widths: channel widths of the stem and the four stages (64 px in, 4x4 map out).
        dropout: dropout before the heads (training only).
    """

    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 24, 48, 96, 128),
                 dropout: float = 0.2):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.widths = tuple(widths)
        self.stem = _conv_bn(1, w0, stride=2)                             # 64 -> 32
        self.stage1 = _conv_bn(w0, w1)                                    # 32
        self.stage2 = nn.Sequential(_conv_bn(w1, w2, 2), _Residual(w2))   # 32 -> 16
        self.stage3 = nn.Sequential(_conv_bn(w2, w3, 2), _Residual(w3))   # 16 -> 8
        self.stage4 = _conv_bn(w3, w4, 2)                                 # 8 -> 4
        # Global average + centre pooling: the centre 2x2 of the 4x4 map is the lesion itself,
        # the average also sees the margin (halo, posterior enhancement below).
        self.dropout = nn.Dropout(dropout)
        self.neck = nn.Sequential(nn.Linear(2 * w4, 96), nn.ReLU(inplace=True))
        self.type_head = nn.Linear(96, len(LESION_TYPES))
        self.malignancy_head = nn.Linear(96, 1)
        self.feature_head = nn.Linear(96, len(LESION_FEATURES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the network.

        Args:
            x: (N, 1, 64, 64) normalised crops.

        Returns:
            ``(type_logits (N, 5), malignancy_logit (N, 1), feature_logits (N, 7))``.
        """
        f = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        pooled = torch.cat([f.mean(dim=(2, 3)), f[:, :, 1:3, 1:3].mean(dim=(2, 3))], dim=1)
        h = self.neck(self.dropout(pooled))
        return self.type_head(h), self.malignancy_head(h), self.feature_head(h)


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))


def count_gflops(model: nn.Module, size_px: int = CROP_SIZE_PX) -> float:
    """GFLOPs (2 x multiply-accumulates of convolutions and linear layers) for one crop.

    Args:
        model: the classifier.
        size_px: crop side in pixels.

    Returns:
        GFLOPs per crop, measured with forward hooks on a (1, 1, size, size) zero input.
    """
    macs = [0]

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs[0] += int(out.numel()) * k

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        macs[0] += int(out.numel()) * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size_px, size_px))
    model.train(was_training)
    for h in handles:
        h.remove()
    return 2.0 * macs[0] / 1e9
