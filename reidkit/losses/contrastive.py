"""Contrastive loss (Hadsell et al. 2006) with Caffe's ``ContrastiveLoss`` conventions.

Caffe computes, over N pairs with distance ``d = |a - b|_2``::

    E = 1/(2N) * sum_n [ y_n * d_n^2 + (1 - y_n) * max(margin - d_n, 0)^2 ]

(``legacy_version: false``, Caffe's default). ``legacy_version: true`` replaces the dissimilar term
by ``max(margin - d_n^2, 0)`` -- the hinge on the squared distance, not squared. Both are offered;
MTDnet's cross-domain loss uses the default with margin 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(
    a: Tensor, b: Tensor, similar: Tensor, margin: float = 1.0, legacy: bool = False
) -> Tensor:
    """Caffe's contrastive loss between rows of ``a`` and ``b`` (N, D); ``similar`` is (N,) 0/1."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must be (N, D) tensors of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if similar.shape != a.shape[:1]:
        raise ValueError(f"need one similar/dissimilar label per pair: {tuple(similar.shape)} "
                         f"labels for {a.shape[0]} pairs")
    y = similar.to(a.dtype)
    dist_sq = (a - b).pow(2).sum(dim=1)
    if legacy:
        dissimilar = torch.relu(margin - dist_sq)
    else:
        # The clamp keeps the gradient of sqrt finite for identical vectors (Caffe adds 1e-4 to d
        # in its backward pass for the same reason); it moves d by at most 1e-6.
        dissimilar = torch.relu(margin - dist_sq.clamp_min(1e-12).sqrt()).pow(2)
    return (y * dist_sq + (1 - y) * dissimilar).sum() / (2 * a.shape[0])


def cross_domain_contrastive_loss(
    target_pos: Tensor, target_neg: Tensor, source_pos: Tensor, source_neg: Tensor,
    margin: float = 1.0,
) -> Tensor:
    """MTDnet's cross-domain loss between joint pair features of a target and a source domain.

    The four inputs are (N, D) features of N positive and N negative pairs per domain (MTDnet: the
    pre-ReLU fc7 of the verification path); they are L2-normalised here. Each target pair is
    compared with the source pair of the same index and status (labelled similar) and with the
    source pair of the same index and the other status (labelled dissimilar), so the 4N
    comparisons are half similar, half dissimilar.
    """
    shapes = {tuple(t.shape) for t in (target_pos, target_neg, source_pos, source_neg)}
    if len(shapes) != 1:
        raise ValueError(f"cross-domain features must share one (N, D) shape, got {sorted(shapes)}")
    target = F.normalize(torch.cat([target_pos, target_neg, target_pos, target_neg]), dim=1)
    source = F.normalize(torch.cat([source_pos, source_neg, source_neg, source_pos]), dim=1)
    n = target_pos.shape[0]
    similar = torch.cat([target.new_ones(2 * n), target.new_zeros(2 * n)])
    return contrastive_loss(target, source, similar, margin=margin)


def indexed_contrastive_loss(
    target_pos: Tensor, target_neg: Tensor, source: Tensor, source_same: Tensor,
    margin: float = 1.0,
) -> Tensor:
    """The pairing of the authors' ``Nets/MTDnet-cross/train_val.prototxt`` (cwhgn/MTDnet).

    ``target_pos`` / ``target_neg``: (N, D) joint features of N positive and N negative target
    pairs; ``source``: (N, D) features of N source pairs from an independent, shuffled pair list,
    ``source_same`` (N,) their same/different labels. Target pair ``k`` of the 2N is compared with
    source pair ``k mod N`` and labelled similar when both have the same status (the prototxt's
    ``cros_concat_db`` and ``cros_concatlb_db = [slabel1, slabel2]``); all L2-normalised.
    """
    if not (target_pos.shape == target_neg.shape == source.shape) or source_same.shape != source.shape[:1]:
        raise ValueError("need (N, D) target positive, target negative and source features and N "
                         f"source labels, got {tuple(target_pos.shape)}, {tuple(target_neg.shape)}, "
                         f"{tuple(source.shape)}, {tuple(source_same.shape)}")
    target = F.normalize(torch.cat([target_pos, target_neg]), dim=1)
    paired = F.normalize(torch.cat([source, source]), dim=1)
    same = source_same.to(target.dtype)
    return contrastive_loss(target, paired, torch.cat([same, 1 - same]), margin=margin)
