"""Data set registry: ``load_dataset(name, root, **opts)`` builds a :class:`ReIDDataset`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reidkit.data.dataset import ReIDDataset

DatasetLoader = Callable[..., ReIDDataset]
_REGISTRY: dict[str, DatasetLoader] = {}


def register(*names: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader ``fn(root: Path, **opts) -> ReIDDataset`` under one or more names."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        for name in names:
            _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | Path, **opts) -> ReIDDataset:
    """Load data set ``name`` from ``root`` (the folder the official archive unpacks to)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    return _REGISTRY[key](Path(root).expanduser(), **opts)
