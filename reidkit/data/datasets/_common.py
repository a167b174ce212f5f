"""Helpers shared by the data set parsers: layout errors, folder scans and seeded splits."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from reidkit.data.dataset import ImageRecord
from reidkit.errors import ReidkitError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DatasetOptionError(ReidkitError, ValueError):
    """An unknown data set name, or an option a data set does not accept (split, subset, ...)."""


class DatasetLayoutError(ReidkitError, FileNotFoundError):
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
    """Return ``root`` or the first ``root/<parent>`` that holds every folder of ``required``."""
    for base in (root, *(root / p for p in parents)):
        # is_dir, not exists: a plain file named like a required folder is a layout error
        if all((base / r).is_dir() for r in required):
            return base
    return None


def scan(
    folder: Path, pattern: re.Pattern[str]
) -> tuple[list[tuple[str, re.Match[str]]], list[str]]:
    """Split the entries of ``folder`` into (path, match) pairs and the names that do not match.

    Both lists are sorted by name; each path is :func:`prefix` + name, the form records store.
    Only the directory listing is read (no per-file stat), so that folders of tens of thousands
    of images parse in milliseconds.
    """
    matched: list[tuple[str, re.Match[str]]] = []
    strays: list[str] = []
    pre = prefix(folder)
    with os.scandir(folder) as entries:
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m is None:
                strays.append(entry.name)
            else:
                matched.append((pre + entry.name, m))
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
    """Raise a :class:`DatasetOptionError` naming the valid range when ``split`` is out of range."""
    if not 0 <= split < num_splits:
        raise DatasetOptionError(
            f"{dataset} has {num_splits} evaluation splits; split={split} is out of range, "
            f"use 0..{num_splits - 1}"
        )


def split_rng(seed: int, split: int) -> np.random.Generator:
    """The generator that draws split ``split``: independent of the other splits, reproducible."""
    return np.random.default_rng([seed, split])


PickPair = Callable[[Sequence[ImageRecord], np.random.Generator], tuple[ImageRecord, ImageRecord]]
"""Chooses one test identity's (query, gallery) images; may draw from the split's generator."""


def first_two(images: Sequence[ImageRecord], rng: np.random.Generator) -> tuple[ImageRecord, ImageRecord]:
    """The identity's first image as query and its second as gallery entry (no random draw)."""
    return images[0], images[1]


def single_shot_split(
    by_pid: Mapping[int, Sequence[ImageRecord]],
    num_test: int,
    *,
    split: int,
    seed: int,
    dataset: str,
    candidates: Iterable[int] | None = None,
    pick: PickPair = first_two,
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Hold out ``num_test`` identities for split ``split``; return (train, query, gallery).

    The test identities are drawn from ``candidates`` (default: every identity in ``by_pid``)
    with :func:`split_rng`. Training gets every image of every other identity, in pid order;
    query and gallery get one image each per test identity, in pid order, chosen by ``pick``
    from the same generator after the identities are drawn.
    """
    pool = sorted(by_pid if candidates is None else candidates)
    if not 0 < num_test < len(pool):
        raise DatasetOptionError(
            f"{dataset}: cannot hold out {num_test} of {len(pool)} identities for testing; "
            f"choose a number between 1 and {len(pool) - 1}"
        )
    rng = split_rng(seed, split)
    test = sorted(rng.choice(pool, size=num_test, replace=False).tolist())
    held_out = set(test)
    train = [r for pid in sorted(by_pid) if pid not in held_out for r in by_pid[pid]]
    pairs = [pick(by_pid[pid], rng) for pid in test]
    return train, [q for q, _ in pairs], [g for _, g in pairs]


def read_camera_pair(
    base: Path, pattern: re.Pattern[str], sample: str
) -> tuple[list[dict[int, ImageRecord]], list[str]]:
    """Index ``base/cam_a`` (camid 0) and ``base/cam_b`` (camid 1) by pid, one image each.

    ``pattern`` must capture the pid in group 1. Returns the two indexes and the notes on
    file names that do not parse.
    """
    cams: list[dict[int, ImageRecord]] = []
    notes: list[str] = []
    for camid, sub in enumerate(("cam_a", "cam_b")):
        matched, strays = scan(base / sub, pattern)
        notes += stray_note(strays, sub + "/", sample)
        cams.append({int(m.group(1)): ImageRecord(path, int(m.group(1)), camid) for path, m in matched})
    return cams, notes


def prefix(folder: Path) -> str:
    """``folder`` as a string ending in a separator: records store ``prefix + name`` paths."""
    return os.path.join(folder, "")
