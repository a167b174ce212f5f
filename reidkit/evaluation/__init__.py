"""Distances and ranking metrics (CMC, mAP, mINP) on plain arrays; no model code here."""

from reidkit.evaluation.distance import compute_distance
from reidkit.evaluation.rank import RankResult, evaluate_rank

__all__ = ["RankResult", "compute_distance", "evaluate_rank"]
