"""Small building blocks shared by the torch architectures (frame network, classifier).

All blocks are plain Conv/BN/activation stacks without hard-coded channel counts in
``forward``, so structured pruning (torch-pruning) can shrink them and
:func:`conform_to_state_dict` can rebuild a pruned model from its state dict alone.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """Conv(k x k, no bias) + BatchNorm + optional Hardswish-free ReLU6.

    ReLU6 rather than Hardswish: it quantizes cleanly (bounded range) and ONNX Runtime fuses
    Conv+Relu/Clip on CPU.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: 1 or 2 (spatial downsampling of the depthwise conv).
        expand: expansion ratio of the hidden layer.

    Shapes:
        (N, c_in, H, W) -> (N, c_out, H / stride, W / stride). Residual when stride 1 and
        c_in == c_out.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, expand: float = 4.0):
        super().__init__()
        hidden = max(8, int(round(c_in * expand)))
        self.use_res = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, c_out, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class SepConv(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 (both with BN + ReLU6). (N, c_in, H, W) -> (N, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.dw = conv_bn(c_in, c_in, 3, groups=c_in)
        self.pw = conv_bn(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def conform_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize every Conv2d / BatchNorm2d / Linear of ``model`` to the shapes in ``state``.

    A structurally pruned model has fewer channels than its architecture's defaults; its state
    dict still says how many. This rebuilds those layers in place (depthwise convs stay
    depthwise) so ``model.load_state_dict(state)`` fits. Layers absent from ``state`` are
    left alone.

    Returns:
        ``model`` (modified in place).
    """
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        w = state[key]
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        if isinstance(module, nn.Conv2d):
            c_out, c_in_per_group = int(w.shape[0]), int(w.shape[1])
            depthwise = module.groups == module.in_channels and module.groups > 1
            groups = c_out if depthwise else module.groups
            c_in = c_in_per_group * groups
            if (c_out, c_in, groups) != (module.out_channels, module.in_channels, module.groups):
                new = nn.Conv2d(c_in, c_out, module.kernel_size, module.stride, module.padding,
                                module.dilation, groups, module.bias is not None)
                setattr(holder, attr, new)
        elif isinstance(module, nn.BatchNorm2d):
            if int(w.shape[0]) != module.num_features:
                setattr(holder, attr, nn.BatchNorm2d(int(w.shape[0])))
        elif isinstance(module, nn.Linear):
            if tuple(w.shape) != (module.out_features, module.in_features):
                setattr(holder, attr, nn.Linear(int(w.shape[1]), int(w.shape[0]),
                                                module.bias is not None))
    return model
