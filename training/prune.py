"""Structured channel pruning with torch-pruning (magnitude / group-L2 importance).

Whole channels are removed from every prunable group (convs, the BatchNorms, depthwise
partners and residual-coupled layers together), so the result is a smaller dense network
that runs faster on any backend. Output layers are never pruned (their channel counts are
the contract). The pruned state dict rebuilds through
:func:`sonoflow.models.arch.blocks.conform_to_state_dict`.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor,
                   keep: list[nn.Module]) -> dict[str, float]:
    """Prune ``ratio`` of the channels of every group of ``model`` in place.

    Args:
        model: the network (eval mode recommended; BN statistics are kept).
        ratio: fraction of channels to remove per group (0..0.9).
        example: an input batch for dependency tracing.
        keep: layers whose output channels must not change (heads).

    Returns:
        ``{"params_before", "params_after", "macs_before", "macs_after"}``.
    """
    model.eval()
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                       pruning_ratio=float(ratio), ignored_layers=keep,
                                       round_to=4, global_pruning=False)
    pruner.step()
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    return {"params_before": float(params0), "params_after": float(params1),
            "macs_before": float(macs0), "macs_after": float(macs1)}
