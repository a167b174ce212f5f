"""MTDnet's ranking loss: a triplet loss on squared Euclidean distances."""

from __future__ import annotations

import torch
from torch import Tensor


def squared_triplet_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0
) -> Tensor:
    """``sum_i max(0, margin + |a_i - p_i|^2 - |a_i - n_i|^2) / (2N)`` over N triplets.

    The convention of MTDnet's Caffe triplet layer: squared distances in the hinge and the sum
    divided by twice the batch size. With L2-normalised embeddings a squared distance lies in
    [0, 4], so the default margin of 1.0 is a quarter of its range.
    """
    if not anchor.shape == positive.shape == negative.shape or anchor.dim() != 2:
        raise ValueError(
            "anchor, positive and negative must be (N, D) tensors of one shape, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    d_ap = (anchor - positive).pow(2).sum(dim=1)
    d_an = (anchor - negative).pow(2).sum(dim=1)
    return torch.relu(margin + d_ap - d_an).sum() / (2 * anchor.shape[0])
