"""Training losses: identity (cross-entropy) and batch-hard triplet."""

from reidkit.losses.softmax import CrossEntropyLabelSmooth, cross_entropy, id_loss
from reidkit.losses.triplet import TripletLoss, TripletResult, batch_hard_triplet, pairwise_distances

__all__ = [
    "CrossEntropyLabelSmooth",
    "TripletLoss",
    "TripletResult",
    "batch_hard_triplet",
    "cross_entropy",
    "id_loss",
    "pairwise_distances",
]
