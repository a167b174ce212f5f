"""Distances, ranking metrics (CMC, mAP, mINP) and re-ranking on plain arrays; no model code here."""

from reidkit.evaluation.distance import compute_distance
from reidkit.evaluation.rank import RankResult, evaluate_rank
from reidkit.evaluation.rerank import re_rank, re_rank_features
from reidkit.evaluation.stream import evaluate_features

__all__ = ["RankResult", "compute_distance", "evaluate_features", "evaluate_rank", "re_rank",
           "re_rank_features"]
