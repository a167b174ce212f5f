"""The Python API in four calls: load a model file, extract features, search a gallery, evaluate.

Each call wraps the library's parts (``reidkit.models.io``, ``reidkit.retrieval``,
``reidkit.data``) with the defaults the ``reidkit`` command uses, so that::

    import reidkit

    model = reidkit.load("run/best.safetensors")
    gallery = reidkit.extract("run/best.safetensors", "photos/")
    hits = reidkit.search(gallery, reidkit.extract("run/best.safetensors", ["person.jpg"]), k=5)
    result = reidkit.evaluate(model, "market1501", "data/market")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from reidkit.data import ImageRecord, load_dataset
from reidkit.data.dataset import ReIDDataset
from reidkit.evaluation.rank import RankResult
from reidkit.models.io import load_model
from reidkit.retrieval.evaluate import evaluate_model
from reidkit.retrieval.features import FeatureSet, extract_feature_set, load_features
from reidkit.retrieval.search import GalleryIndex, load_index_for

Images = str | Path | Sequence[str | Path] | Sequence[ImageRecord]


def load(path: str | Path, device: str = "cpu") -> nn.Module:
    """The model in a reidkit model file, in eval mode on ``device``, its ``spec`` restored."""
    return load_model(path, map_location=device)


def extract(model_file: str | Path, images: Images, *, batch_size: int = 64,
            device: str = "cpu", flip: bool = False, num_workers: int = 0) -> FeatureSet:
    """Features of ``images`` (a folder, searched recursively as ``reidkit extract --images``
    does; image paths; or data-set records), preprocessed as the model file says."""
    return extract_feature_set(model_file, _records(images), batch_size=batch_size,
                               num_workers=num_workers, flip=flip, device=device, progress=False)


@dataclass(frozen=True)
class Hit:
    """One gallery image found for a query: its rank (1 first), distance, path and labels."""

    rank: int
    distance: float
    path: str
    index: int
    pid: int
    camid: int


def search(gallery: FeatureSet | str | Path, queries: FeatureSet | np.ndarray,
           k: int = 5) -> list[list[Hit]]:
    """The ``k`` nearest gallery images of each query, nearest first. As with ``reidkit search``,
    a gallery feature file's faiss index (``reidkit index``), if there is one, is checked against
    the file and used for galleries of 100,000 images or more; smaller ones are searched exactly."""
    approximate = None
    if isinstance(gallery, (str, Path)):
        fs = load_features(gallery)
        approximate = load_index_for(gallery, len(fs), fs.dim, fs.meta.get("metric", "euclidean"))
    else:
        fs = gallery
    features = queries.features if isinstance(queries, FeatureSet) else np.atleast_2d(queries)
    index = GalleryIndex.from_feature_set(fs, approximate=approximate)
    distances, indices = index.search(features, min(k, len(fs)))
    return [[Hit(rank + 1, float(d), str(fs.paths[i]), int(i), int(fs.pids[i]), int(fs.camids[i]))
             for rank, (d, i) in enumerate(zip(row_d, row_i, strict=True))]
            for row_d, row_i in zip(np.asarray(distances), np.asarray(indices), strict=True)]


def evaluate(model: nn.Module | str | Path, dataset: str | ReIDDataset, root: str | Path | None = None,
             **options: Any) -> RankResult:
    """CMC, mAP and mINP of ``model`` (or a model file) on a data set's query and gallery (a
    name with its ``root`` folder, or a loaded set), ranked as the model's spec says.
    ``options`` go to :func:`~reidkit.retrieval.evaluate.evaluate_model` (``device``,
    ``batch_size``, ``mirror``, ...)."""
    if not isinstance(model, nn.Module):
        model = load(model, options.get("device", "cpu"))
    if not isinstance(dataset, ReIDDataset):
        if root is None:
            raise TypeError(f"evaluate({dataset!r}) needs root=, the data set's folder")
        dataset = load_dataset(dataset, root)
    return evaluate_model(model, dataset, **options)


def _records(images: Images) -> list[ImageRecord]:
    if isinstance(images, (str, Path)):
        return load_dataset("folder", images, subset="gallery").gallery
    items = list(images)
    if all(isinstance(item, ImageRecord) for item in items):
        return items
    # loose image files: no identity (pid -1), each its own camera
    return [ImageRecord(str(path), -1, camid) for camid, path in enumerate(items)]
