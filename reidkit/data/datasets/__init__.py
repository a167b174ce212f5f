"""Data set registry: ``load_dataset(name, root, **opts)`` builds a :class:`ReIDDataset`."""

from __future__ import annotations

# The parsers register themselves (reidkit.data.datasets.registry) when imported.
from reidkit.data.datasets import (  # noqa: F401
    cuhk01,
    cuhk03,
    dukemtmcreid,
    folder,
    ilids,
    market1501,
    msmt17,
    prid2011,
    viper,
)
from reidkit.data.datasets._common import DatasetLayoutError, DatasetOptionError
from reidkit.data.datasets.registry import DatasetLoader, list_datasets, load_dataset, register

__all__ = ["DatasetLayoutError", "DatasetLoader", "DatasetOptionError", "list_datasets", "load_dataset",
           "register"]
