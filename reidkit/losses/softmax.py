"""Identity (softmax cross-entropy) losses, with optional label smoothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (B, K) ``logits`` against (B,) class indices.

    With smoothing eps the target is ``(1 - eps) * one_hot + eps / K``.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing!r}")
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def id_loss(logits: Sequence[Tensor], targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Sum over branches of the cross-entropy of each branch's logits (the Pyramid's ID loss)."""
    if not logits:
        raise ValueError("id_loss needs at least one logits tensor")
    return torch.stack([cross_entropy(b, targets, label_smoothing) for b in logits]).sum()


class CrossEntropyLabelSmooth(nn.Module):
    """Module form of :func:`id_loss`: accepts one logits tensor or a list of them (summed)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor | Sequence[Tensor], targets: Tensor) -> Tensor:
        branches = [logits] if isinstance(logits, Tensor) else logits
        return id_loss(branches, targets, self.label_smoothing)
