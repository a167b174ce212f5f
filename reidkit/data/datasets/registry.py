"""The data set registry: each parser registers its loader here under its names."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from reidkit.data.dataset import ReIDDataset
from reidkit.data.datasets._common import DatasetOptionError

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
    """Registered data set names (normalised: lowercase, no '-' or '_')."""
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | Path, **opts) -> ReIDDataset:
    """Load data set ``name`` from ``root`` (the folder the official archive unpacks to)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _REGISTRY:
        raise DatasetOptionError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    loader = _REGISTRY[key]
    params = list(inspect.signature(loader).parameters.values())[1:]  # after root
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(opts) - set(accepted))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise DatasetOptionError(f"data set {name!r} has no option {', '.join(unknown)}; its options: "
                                 f"{', '.join(accepted) or 'none'}")
    return loader(Path(root).expanduser(), **opts)
