"""Helpers shared by the data set parsers: layout errors, folder scans and seeded splits."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DatasetLayoutError(FileNotFoundError):
    """A data set folder is missing or is not laid out like the official release.

    A subclass of :class:`FileNotFoundError`: the files the parser expects are not where it looks.
    The message names the expected layout, a sample file name and where the data set comes from.
    """


def layout_error(
    dataset: str, root: Path, problem: str, layout: str, source: str
) -> DatasetLayoutError:
    """Build the error for a data set that is missing or mis-laid-out under ``root``."""
    return DatasetLayoutError(
        f"{dataset}: {problem} (looked in {root}).\n"
        f"Expected layout: {layout}\n"
        f"Where to get it: {source}"
    )


def find_base(root: Path, required: Sequence[str], parents: Sequence[str]) -> Path | None:
    """Return ``root`` or the first ``root/<parent>`` that holds every entry of ``required``."""
    for base in (root, *(root / p for p in parents)):
        if all((base / r).exists() for r in required):
            return base
    return None


def scan(
    folder: Path, pattern: re.Pattern[str]
) -> tuple[list[tuple[str, re.Match[str]]], list[str]]:
    """Split the entry names of ``folder`` into (name, match) pairs, sorted, and the strays.

    Only the directory listing is read (no per-file stat), so that folders of tens of thousands
    of images parse in milliseconds.
    """
    matched: list[tuple[str, re.Match[str]]] = []
    strays: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m is None:
                strays.append(entry.name)
            else:
                matched.append((entry.name, m))
    matched.sort(key=lambda item: item[0])
    strays.sort()
    return matched, strays


def stray_note(strays: Sequence[str], where: str, sample: str) -> list[str]:
    """A note (or none) saying how many files were skipped because their names do not parse."""
    if not strays:
        return []
    shown = ", ".join(strays[:3]) + (", ..." if len(strays) > 3 else "")
    return [f"skipped {len(strays)} file(s) in {where} not named like {sample}: {shown}"]


def check_split(split: int, num_splits: int, dataset: str) -> None:
    """Raise a ValueError naming the valid range when ``split`` is out of range."""
    if not 0 <= split < num_splits:
        raise ValueError(
            f"{dataset} has {num_splits} evaluation splits; split={split} is out of range, "
            f"use 0..{num_splits - 1}"
        )


def split_rng(seed: int, split: int) -> np.random.Generator:
    """The generator that draws split ``split``: independent of the other splits, reproducible."""
    return np.random.default_rng([seed, split])


def split_ids(
    ids: Iterable[int], num_test: int, rng: np.random.Generator, dataset: str
) -> tuple[list[int], list[int]]:
    """Draw ``num_test`` test identities from ``ids``; return sorted (train ids, test ids)."""
    pool = sorted(ids)
    if not 0 < num_test < len(pool):
        raise ValueError(
            f"{dataset}: cannot hold out {num_test} of {len(pool)} identities for testing; "
            f"choose a number between 1 and {len(pool) - 1}"
        )
    test = set(rng.choice(pool, size=num_test, replace=False).tolist())
    return [p for p in pool if p not in test], sorted(test)


def prefix(folder: Path) -> str:
    """``folder`` as a string ending in a separator: records store ``prefix + name`` paths."""
    return os.path.join(folder, "")
