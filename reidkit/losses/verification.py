"""Binary verification (same person or not) on a pair's two-way logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SAME = 1
"""Index of the "same person" class in verification logits; index 0 is "different"."""


def verification_loss(logits: Tensor, same: Tensor) -> Tensor:
    """Softmax cross-entropy of (N, 2) pair logits against ``same`` (N,), averaged over pairs.

    ``same`` holds 1 (or True) for pairs of one person and 0 for pairs of two; this is Caffe's
    SoftmaxWithLoss with its default normalisation (mean over the batch), as MTDnet trains it.
    """
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"verification logits must be (N, 2), got {tuple(logits.shape)}")
    if same.shape != logits.shape[:1]:
        raise ValueError(f"need one same/different label per pair: {tuple(same.shape)} labels "
                         f"for {logits.shape[0]} pairs")
    return F.cross_entropy(logits, same.long())


def same_probability(logits: Tensor) -> Tensor:
    """The softmax probability (N,) that each pair shows the same person."""
    return torch.softmax(logits, dim=1)[:, SAME]
