"""Batch-hard triplet loss (Hermans et al., 2017) on euclidean distances."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn


class TripletResult(NamedTuple):
    """Batch-hard triplet loss and what the dynamic scheduler needs to know about the batch.

    ``loss``: mean over the valid anchors; when ``num_valid == 0`` it is a zero that is still part
    of the graph (``backward`` works and adds nothing), and the caller should treat the batch as
    carrying no triplet information (the scheduler leaves its triplet average unchanged).
    ``num_valid``: anchors with at least one positive (another image of the same identity) and
    one negative in the batch. ``precision``: the fraction of valid anchors whose hardest
    negative is farther than their hardest positive (0.0 when there is none).
    """

    loss: Tensor
    num_valid: int
    precision: float


def pairwise_distances(features: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distance matrix of the rows of ``features``, (B, D) -> (B, B).

    Squared distances are clamped at ``eps`` before the square root, whose gradient is infinite
    at zero (identical features, and every diagonal entry).
    """
    sq = features.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
    return d2.clamp_min(eps).sqrt()


def batch_hard_triplet(
    features: Tensor,
    targets: Tensor,
    margin: float = 1.4,
    soft_margin: bool = False,
    normalize: bool = False,
) -> TripletResult:
    """For each anchor, its farthest positive and nearest negative in the batch.

    Per anchor ``max(0, d_ap - d_an + margin)``, or ``log(1 + exp(d_ap - d_an))`` with
    ``soft_margin``; averaged over the valid anchors. ``normalize`` L2-normalises the features
    first. Distances are computed in float32 whatever the input precision (mixed precision).
    """
    x = features.float()
    if normalize:
        x = F.normalize(x, dim=1)
    dist = pairwise_distances(x)
    same = targets[:, None] == targets[None, :]
    positive = same.clone()
    positive.fill_diagonal_(False)
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    d_ap = dist.masked_fill(~positive, float("-inf")).amax(dim=1)[valid]
    d_an = dist.masked_fill(~negative, float("inf")).amin(dim=1)[valid]
    gap = d_ap - d_an
    per_anchor = F.softplus(gap) if soft_margin else F.relu(gap + margin)
    count = valid.sum()
    loss = per_anchor.sum() / count.clamp_min(1)
    num_valid, num_correct = count.item(), (gap < 0).sum().item()
    return TripletResult(loss, num_valid, num_correct / num_valid if num_valid else 0.0)


class TripletLoss(nn.Module):
    """Module form of :func:`batch_hard_triplet`; ``forward(features, targets) -> TripletResult``.

    The Pyramid paper's margin is 1.4 (euclidean distance, unnormalised features).
    """

    def __init__(self, margin: float = 1.4, soft_margin: bool = False,
                 normalize: bool = False) -> None:
        super().__init__()
        if not soft_margin and margin < 0:
            raise ValueError(f"margin must be >= 0, not {margin!r}")
        self.margin = margin
        self.soft_margin = soft_margin
        self.normalize = normalize

    def forward(self, features: Tensor, targets: Tensor) -> TripletResult:
        return batch_hard_triplet(features, targets, self.margin, self.soft_margin,
                                  self.normalize)
