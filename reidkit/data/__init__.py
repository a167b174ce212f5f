"""Data sets, image records, transforms and samplers."""

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets import list_datasets, load_dataset

__all__ = ["ImageRecord", "ReIDDataset", "list_datasets", "load_dataset", "relabel"]
