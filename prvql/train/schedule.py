"""Optimiser and learning-rate schedule (the released code's; how it differs from the paper: docs/MODEL.md).

AdamW over the parameters that require a gradient (the frozen backbone has none), default betas and eps. One
parameter group, or two when the backbone has trainable stages and ``backbone_lr_scale`` is not 1: group 0 holds
the refinement model at ``lr``, group 1 the backbone's trainable stages at ``lr * backbone_lr_scale`` (the usual
lower rate for pre-trained features). The learning rate of optimiser step i (0-based) is ``lr * factor(i)`` with::

    factor(i) = min(1, (i + 1) / warmup, (total - i) / (total - warmup))

i.e. a linear warm-up that reaches the peak at step ``warmup - 1`` and a linear decay that would reach 0 at step
``total`` (``transformers.get_linear_schedule_with_warmup`` shifted by one step, so that no step runs at lr 0).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> AdamW:
    """AdamW over ``model``'s trainable parameters; those of ``model.backbone`` at ``lr * backbone_lr_scale``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    tuned = [p for p in params if id(p) in backbone_ids]
    if backbone_lr_scale == 1.0 or not tuned:
        return AdamW(params, lr=lr, weight_decay=weight_decay)
    rest = [p for p in params if id(p) not in backbone_ids]
    groups = [{"params": rest, "lr": lr}, {"params": tuned, "lr": lr * backbone_lr_scale}]
    return AdamW(groups, lr=lr, weight_decay=weight_decay)


def warmup_linear_decay(warmup: int, total: int) -> Callable[[int], float]:
    """The schedule factor as a function of the optimiser step (see the module docstring)."""

    def factor(step: int) -> float:
        rise = (step + 1) / warmup if warmup > 0 else 1.0
        fall = (total - step) / max(1, total - warmup)
        return max(0.0, min(1.0, rise, fall))

    return factor


def build_scheduler(optimizer: Optimizer, warmup: int, total: int) -> LambdaLR:
    """Per-optimiser-step LambdaLR for :func:`warmup_linear_decay`."""
    return LambdaLR(optimizer, warmup_linear_decay(warmup, total))
