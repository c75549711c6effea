"""The frame network: one pass per frame, detection + segmentation + diffuse grading.

Input: (N, 1, 256, 256) float32, the sector's box letterboxed, normalised as the card says.

Backbone: a light inverted-residual network (strides 2, 4, 8, 16, 32). Neck: an FPN that
fuses strides 32 -> 16 -> 8 -> 4 top-down; a mask branch adds the stride-2 stem features.
Heads:

* ``heatmap`` (N, 1, H/4, W/4): sigmoid lesion-centre heatmap (CenterNet), stride 4 so a 5 mm
  nodule (about 8 input pixels) still covers two cells;
* ``size`` (N, 2, H/4, W/4): box width, height in input pixels (exp of the raw output);
* ``offset`` (N, 2, H/4, W/4): sub-cell centre offset in cells (x, y), in [0, 1);
* ``lesion_mask`` (N, 1, H/2, W/2), ``liver_mask`` (N, 1, H/2, W/2): sigmoid probabilities;
* ``steatosis`` (N, 4) and ``fibrosis`` (N, 5): softmax probabilities from features pooled
  into 4 depth bands x 1 (so the head sees how brightness falls with depth: attenuation).

Outputs come as a tuple in :attr:`FrameNet.output_names` order (ONNX output names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sonoflow.models.arch.blocks import InvertedResidual, SepConv, conv_bn

OUTPUT_NAMES = ("heatmap", "size", "offset", "lesion_mask", "liver_mask", "steatosis",
                "fibrosis")
DEFAULT_WIDTHS = (16, 24, 32, 64, 112)  # stem (s2), s4, s8, s16, s32
DEFAULT_DEPTHS = (1, 2, 3, 2)  # blocks in stages s4, s8, s16, s32


class FrameNet(nn.Module):
    """Multi-task frame network (see the module docstring for inputs/outputs).

    Args:
        widths: channels of the stem and the four stages.
        depths: inverted-residual blocks per stage.
        expand: expansion ratio of the inverted-residual blocks.
        fpn: FPN channels.
        head: head trunk channels.
        n_steatosis: steatosis classes (S0..S3).
        n_fibrosis: fibrosis classes (F0..F4).
    """

    output_names = OUTPUT_NAMES

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS,
                 depths: tuple[int, ...] = DEFAULT_DEPTHS, expand: float = 3.0, fpn: int = 32,
                 head: int = 32, n_steatosis: int = 4, n_fibrosis: int = 5):
        super().__init__()
        w = list(widths)
        self.stem = conv_bn(1, w[0], 3, 2)
        stages = []
        for i, n in enumerate(depths):
            # the first block runs its expansion at stride 2 (128 x 128): keep it unexpanded
            blocks = [InvertedResidual(w[i], w[i + 1], 2, expand if i else 1.0)]
            blocks += [InvertedResidual(w[i + 1], w[i + 1], 1, expand) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList([conv_bn(c, fpn, 1) for c in w[1:]])
        self.smooth = nn.ModuleList([SepConv(fpn, fpn) for _ in w[1:-1]])
        # detection trunk at stride 4
        self.det = SepConv(fpn, head)
        self.hm = nn.Conv2d(head, 1, 1)
        self.wh = nn.Conv2d(head, 2, 1)
        self.off = nn.Conv2d(head, 2, 1)
        # mask trunk at stride 2: FPN stride 4 upsampled + stem features
        self.mask_reduce = conv_bn(fpn, w[0], 1)
        self.mask = SepConv(w[0], w[0])
        self.mask_out = nn.Conv2d(w[0], 2, 1)
        # diffuse grading from the deepest features pooled into depth bands
        self.grade = nn.Sequential(nn.Linear(w[-1] * 4, 64), nn.ReLU6(inplace=True))
        self.steatosis = nn.Linear(64, n_steatosis)
        self.fibrosis = nn.Linear(64, n_fibrosis)
        nn.init.constant_(self.hm.bias, -4.6)  # prior 0.01, as CenterNet/focal loss

    def forward_raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits / raw regressions (for the losses). Keys as :data:`OUTPUT_NAMES`."""
        s2 = self.stem(x)
        feats = []
        y = s2
        for stage in self.stages:
            y = stage(y)
            feats.append(y)  # s4, s8, s16, s32
        p = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.lateral[i](feats[i])
            p = self.smooth[i](p)
        d = self.det(p)
        m = F.interpolate(self.mask_reduce(p), scale_factor=2.0, mode="bilinear",
                          align_corners=False) + s2
        m = self.mask_out(self.mask(m))
        g = F.adaptive_avg_pool2d(feats[-1], (4, 1)).flatten(1)
        g = self.grade(g)
        return {"heatmap": self.hm(d), "size": self.wh(d), "offset": self.off(d),
                "lesion_mask": m[:, 0:1], "liver_mask": m[:, 1:2],
                "steatosis": self.steatosis(g), "fibrosis": self.fibrosis(g)}

    @staticmethod
    def activate(raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Raw outputs -> probabilities / pixels, as exported (tuple in OUTPUT_NAMES order)."""
        return (torch.sigmoid(raw["heatmap"]),
                torch.exp(raw["size"].clamp(-3.0, 6.0)) * 4.0,
                torch.sigmoid(raw["offset"]),
                torch.sigmoid(raw["lesion_mask"]),
                torch.sigmoid(raw["liver_mask"]),
                torch.softmax(raw["steatosis"], dim=1),
                torch.softmax(raw["fibrosis"], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.activate(self.forward_raw(x))
