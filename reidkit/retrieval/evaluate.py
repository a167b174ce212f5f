"""Ranking a gallery with a model, and scoring the ranking: the one path every evaluation takes.

Trainers (validation), protocols (every split), the demo, the CLI and the benchmarks call
:func:`evaluate_model`; it reads the model's :class:`~reidkit.models.spec.ModelSpec` for the test
transform and for how to rank (embedding distances, or MTDnet's pair scores).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from reidkit.data.dataset import ImageRecord, ReIDDataset
from reidkit.data.loader import build_test_loader
from reidkit.evaluation.distance import compute_distance
from reidkit.evaluation.rank import RankResult, evaluate_rank
from reidkit.evaluation.stream import evaluate_features
from reidkit.models.inference import extract_features
from reidkit.models.spec import ModelSpec, RanksBy, inference_model, model_spec
from reidkit.retrieval.pair_ranking import pair_distance_matrix


def model_distances(
    model: nn.Module,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    *,
    size: Sequence[int] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    mirror: bool = False,
    ranks_by: RanksBy | None = None,
) -> np.ndarray:
    """Query x gallery distances of ``model`` (smaller: more alike), images at ``size``.

    ``ranks_by`` (default: the model's) is ``"embedding"`` (Euclidean distances of the features;
    ``"embedding"`` also ranks an MTDnet pair model by its ranking branch, MTDtrp) or
    ``"pairs"`` (1 - MTDnet's verification score, averaged over its 8 passes). ``mirror``
    ranks embeddings as the MTDnet authors' ``ComputeAccuracy/GetAccuracyfromFeatures.py`` do:
    the mean of the four squared distances between original and mirrored images.
    """
    model = inference_model(model).to(device)
    spec = model_spec(model)
    q_loader, g_loader = _loaders(spec, query, gallery, size, batch_size, num_workers)
    if (ranks_by or spec.ranks_by) == "pairs":
        return pair_distance_matrix(model, q_loader, g_loader, batch_size=batch_size,
                                    progress=False)
    spec.check_embedding()
    if not mirror:
        qf, gf = (extract_features(model, loader, device) for loader in (q_loader, g_loader))
        return compute_distance(qf, gf, metric="euclidean")
    return mirror_distances(*(extract_features(model, loader, device) for loader in
                              (q_loader, _mirrored(q_loader), g_loader, _mirrored(g_loader))))


def _loaders(spec: ModelSpec, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
             size: Sequence[int] | None, batch_size: int, num_workers: int) -> list[Any]:
    transform = spec.test_transform(size)  # checks the size before any image is read
    return [build_test_loader(list(r), transform, batch_size=batch_size, num_workers=num_workers)
            for r in (query, gallery)]


def _mirrored(loader: Iterable) -> Iterable:
    return ((batch[0].flip(-1), *batch[1:]) for batch in loader)


def mirror_distances(query: np.ndarray, query_mirror: np.ndarray, gallery: np.ndarray,
                     gallery_mirror: np.ndarray) -> np.ndarray:
    """``mean over {q, q'} x {g, g'} of |q - g|^2``, computed as ``|q_m - g_m|^2 + s_q + s_g``
    with ``x_m`` the mean of an image's two features and ``s_x = |x - x'|^2 / 4`` their spread."""
    qm, gm = (query + query_mirror) / 2, (gallery + gallery_mirror) / 2
    spread_q = np.square(query - query_mirror).sum(1) / 4
    spread_g = np.square(gallery - gallery_mirror).sum(1) / 4
    return compute_distance(qm, gm, metric="sqeuclidean") + spread_q[:, None] + spread_g[None, :]


def evaluate_model(
    model: nn.Module,
    query: ReIDDataset | Sequence[ImageRecord],
    gallery: Sequence[ImageRecord] | None = None,
    *,
    protocol: str | None = None,
    max_rank: int = 50,
    ap: str = "standard",
    progress: bool = False,
    size: Sequence[int] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    mirror: bool = False,
    ranks_by: RanksBy | None = None,
) -> RankResult:
    """CMC, mAP and mINP of ``model`` ranking ``gallery`` for each of ``query``.

    ``query`` is a data set (its query and gallery images; CUHK03 sets are scored under the
    ``cuhk03`` protocol) or a list of query records with ``gallery`` the gallery records.
    ``protocol`` defaults to ``market1501``; the CMC is cut at the gallery size; ``ap`` is
    :func:`~reidkit.evaluation.evaluate_rank`'s. The ranking options are
    :func:`model_distances`'. Embeddings are scored in bounded memory, query block by query block
    (:func:`~reidkit.evaluation.evaluate_features`; ``progress``: a bar on stderr), with the
    numbers the full distance matrix gives.
    """
    query, gallery, protocol = _query_and_gallery(query, gallery, protocol)
    labels = _labels(query, gallery)
    scoring = {"max_rank": min(max_rank, len(gallery)), "protocol": protocol, "ap": ap}
    model = inference_model(model).to(device)
    spec = model_spec(model)
    if (ranks_by or spec.ranks_by) == "embedding" and not mirror:
        spec.check_embedding()
        loaders = _loaders(spec, query, gallery, size, batch_size, num_workers)
        qf, gf = (extract_features(model, loader, device) for loader in loaders)
        return evaluate_features(qf, gf, *labels, device=device, progress=progress, **scoring)
    distmat = model_distances(model, query, gallery, size=size, batch_size=batch_size,
                              num_workers=num_workers, device=device, mirror=mirror,
                              ranks_by=ranks_by)
    return evaluate_rank(distmat, *labels, **scoring)


def _query_and_gallery(query: ReIDDataset | Sequence[ImageRecord],
                       gallery: Sequence[ImageRecord] | None, protocol: str | None
                       ) -> tuple[Sequence[ImageRecord], Sequence[ImageRecord], str]:
    """The query and gallery records, and the protocol (a data set's own by default)."""
    if not isinstance(query, ReIDDataset):
        if gallery is None:
            raise TypeError("evaluate_model needs gallery records with query records")
        return query, gallery, protocol or "market1501"
    if gallery is not None:
        raise TypeError("pass a data set alone, or query and gallery records")
    if not query.query or not query.gallery:
        raise ValueError(f"{query.name} split {query.split} has no query or gallery images")
    own = "cuhk03" if query.name.startswith("cuhk03") else "market1501"
    return query.query, query.gallery, protocol or own


def _labels(query: Sequence[ImageRecord], gallery: Sequence[ImageRecord]) -> list[np.ndarray]:
    return [np.array([r.pid for r in query]), np.array([r.pid for r in gallery]),
            np.array([r.camid for r in query]), np.array([r.camid for r in gallery])]


def validation_metrics(result: RankResult) -> dict[str, float]:
    """The numbers a training log keeps of a validation: mAP, rank-1, rank-5 and mINP."""
    return {"mAP": float(result.mAP), "rank1": float(result.cmc[0]),
            "rank5": float(result.cmc[min(4, len(result.cmc) - 1)]), "mINP": float(result.mINP)}
