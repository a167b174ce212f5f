"""A user's own data: a folder per identity, or Market-style file names.

Subsets are found by folder name: ``train/`` (or ``bounding_box_train/``), ``query/`` and
``gallery/`` (or ``bounding_box_test/``). A root with none of them is one subset by itself
(``subset=``): by default a root of identity folders is a training set and a root of images a
gallery (a folder to search in). ``test_ids=N`` holds N identities of such a training set out as
query and gallery (seeded by ``seed``): per identity the first image is the query and the rest
its gallery.

Inside a subset, either every identity has its own folder (``gallery/alice/001.jpg``; numeric
folder names are the pids, other names are numbered in sorted order across the data set) or the
images lie flat with the pid leading the name (``0002_c1s1_000451_03.jpg``, ``17_anything.png``).
Pid -1 is junk and dropped. Images without an identity are skipped, except in a gallery without a
query, where they are kept with pid -1 (search needs no labels). Query and gallery must use the
same identity scheme.

Cameras come from a ``_c<number>`` in the file name. When some query or gallery image has none,
every query and gallery image counts as a camera of its own (so no true match is ever removed as
a same-camera match) and a note says so; training images without one get camid 0.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets._common import (
    IMAGE_SUFFIXES,
    DatasetOptionError,
    layout_error,
    prefix,
    stray_note,
)
from reidkit.data.datasets.registry import register
from reidkit.data.sidecar import attach_sightings

SUBSET_FOLDERS = {
    "train": ("train", "bounding_box_train"),
    "query": ("query",),
    "gallery": ("gallery", "bounding_box_test"),
}
# Ids are -1 (junk) or 1-9 ASCII digits, so they fit int64; other signs, unicode digits and
# longer numbers carry no identity (or no camera).
_PID = re.compile(r"(-1|\d{1,9})_", re.ASCII)
_CAM = re.compile(r"_c(\d{1,9})(?!\d)", re.ASCII)
_INT = re.compile(r"-1|\d{1,9}", re.ASCII)
_LAYOUT = (
    "{root}/ holding train/, query/ and gallery/ (or any of them, or just images), each with a "
    "folder per identity (gallery/0001/a.jpg) or images named like 0002_c1s1_000451_03.jpg "
    "(pid first, optional _c<camera>)"
)
_SOURCE = "your own images (this loader reads any folder laid out as above)"


class _Item(NamedTuple):
    path: str
    identity: str | None  # folder name or leading number of the file name
    camera: int | None


def _camera(name: str) -> int | None:
    m = _CAM.search(name)
    return int(m.group(1)) if m else None


def _is_junk(identity: str) -> bool:
    """Pid -1 marks junk images, as in Market-1501."""
    return _INT.fullmatch(identity) is not None and int(identity) == -1


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _scan_subset(folder: Path) -> tuple[list[_Item], list[str]]:
    """Images of one subset folder, in name order, and the names of files that are not images."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    items: list[_Item] = []
    strays: list[str] = []
    pre = prefix(folder)
    if any(e.is_dir() for e in entries):
        for entry in entries:
            if not entry.is_dir():
                strays.append(entry.name)
                continue
            with os.scandir(entry.path) as it:
                for f in sorted(it, key=lambda e: e.name):
                    if _is_image(f.name) and not f.is_dir():
                        items.append(_Item(f"{pre}{entry.name}{os.sep}{f.name}", entry.name,
                                           _camera(f.name)))
                    else:
                        strays.append(f"{entry.name}/{f.name}")
    else:
        for entry in entries:
            if not _is_image(entry.name):
                strays.append(entry.name)
                continue
            m = _PID.match(entry.name)
            items.append(_Item(pre + entry.name, m.group(1) if m else None,
                               _camera(entry.name)))
    return items, strays


def _has_folders(root: Path) -> bool:
    with os.scandir(root) as it:
        return any(e.is_dir() for e in it)


@register("folder")
def load_folder(root: Path, *, subset: str = "auto", test_ids: int = 0, seed: int = 0) -> ReIDDataset:
    """Load a user's folder; ``subset`` (auto | train | gallery) is the role of ``root`` when it
    has no subset folders; ``test_ids`` carves a query/gallery split from a training set."""
    if subset not in ("auto", "gallery", "train"):
        raise DatasetOptionError(f"folder: subset must be 'auto', 'gallery' or 'train', got {subset!r}")
    if isinstance(test_ids, bool) or not isinstance(test_ids, int) or test_ids < 0:
        raise DatasetOptionError(f"folder: test_ids must be a number of identities >= 0, got {test_ids!r}")
    if not root.is_dir():
        raise layout_error("folder", root, "folder not found", _LAYOUT.format(root=root), _SOURCE)
    folders = {
        role: next((root / n for n in names if (root / n).is_dir()), None)
        for role, names in SUBSET_FOLDERS.items()
    }
    if not any(folders.values()):
        if subset == "auto":
            subset = "train" if _has_folders(root) else "gallery"
        folders[subset] = root
    if folders["query"] is not None and folders["gallery"] is None:
        raise layout_error("folder", root, "query/ found without gallery/ (or bounding_box_test/)",
                           _LAYOUT.format(root=root), _SOURCE)

    notes: list[str] = []
    scanned: dict[str, list[_Item]] = {}
    for role, folder in folders.items():
        if folder is None:
            scanned[role] = []
            continue
        scanned[role], strays = _scan_subset(folder)
        notes += stray_note(strays, f"{role} folder {folder}", "an image (.jpg, .png, ...)")

    identities = {it.identity for items in scanned.values() for it in items
                  if it.identity is not None and not _is_junk(it.identity)}
    numeric = all(_INT.fullmatch(name) for name in identities)
    order = {name: i for i, name in enumerate(sorted(identities))}
    search_only = folders["query"] is None

    kept: dict[str, list[_Item]] = {}
    pids: dict[str, list[int]] = {}
    for role, items in scanned.items():
        kept[role], pids[role] = [], []
        junk = unlabeled = 0
        for it in items:
            if it.identity is None:
                if not (role == "gallery" and search_only):
                    unlabeled += 1
                    continue
                pid = -1
            elif _is_junk(it.identity):
                junk += 1
                continue
            else:
                pid = int(it.identity) if numeric else order[it.identity]
            kept[role].append(it)
            pids[role].append(pid)
        if junk:
            notes.append(f"dropped {junk} junk image(s) (pid -1) from the {role} set")
        if unlabeled:
            notes.append(f"skipped {unlabeled} {role} image(s) whose name carries no identity")
    if not any(kept.values()):
        raise layout_error("folder", root, "no usable images found", _LAYOUT.format(root=root),
                           _SOURCE)
    if search_only and -1 in pids["gallery"]:
        notes.append(f"{pids['gallery'].count(-1)} gallery image(s) carry no identity (pid -1): "
                     "fine for search, excluded by evaluation")

    cameras = [it.camera for items in kept.values() for it in items if it.camera is not None]
    offset = 1 if cameras and min(cameras) >= 1 else 0  # _c1 is the first camera, as in Market
    test_items = kept["gallery"] + kept["query"]
    with_cams = all(it.camera is not None for it in test_items)
    if not with_cams:
        notes.append("query/gallery file names carry no camera id (like _c3): every query and "
                     "gallery image counts as its own camera")
    if any(it.camera is None for it in kept["train"]):
        notes.append("training images without a camera id (like _c3) get camid 0")

    def records(role: str, first_unique: int) -> list[ImageRecord]:
        out = []
        for i, (it, pid) in enumerate(zip(kept[role], pids[role], strict=True)):
            if role != "train" and not with_cams:
                camid = first_unique + i
            elif it.camera is None:  # a training image without a camera
                camid = 0
            else:
                camid = it.camera - offset
            # The data set's own names, shown to people: folder name or file-name id, _c<n>.
            out.append(ImageRecord(it.path, pid, camid, None if it.camera is None else str(it.camera),
                                   it.identity))
        return out

    train, gallery = records("train", 0), records("gallery", 0)
    query = records("query", len(gallery))
    if test_ids:
        if query or gallery:
            raise DatasetOptionError(
                f"folder: test_ids carves query/gallery from a training set, but {root} already "
                "has query/gallery images; drop test_ids")
        train_cams = all(it.camera is not None for it in kept["train"])
        train, query, gallery = _carve_test(train, test_ids, seed, train_cams)
        notes.append(f"held out {test_ids} training identities as the test split (test_ids, "
                     f"seed {seed}): {len(query)} query and {len(gallery)} gallery images"
                     + ("" if train_cams else "; every test image counts as its own camera"))
    # Crops from `reidkit ingest` carry where and when they were seen (sightings.csv).
    query, gallery = attach_sightings(query, root), attach_sightings(gallery, root)
    return ReIDDataset(root.resolve().name, relabel(train), query, gallery, notes=notes)


def _carve_test(train: list[ImageRecord], num_ids: int, seed: int, cameras: bool
                ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """(train, query, gallery): ``num_ids`` identities drawn with ``seed``; per identity its
    first image is the query and the others its gallery. Without cameras every query and gallery
    image is a camera of its own, so that no match is removed as a same-camera one."""
    pids = sorted({r.pid for r in train})
    if not 0 < num_ids < len(pids):
        raise DatasetOptionError(f"folder: cannot hold out test_ids={num_ids} of {len(pids)} "
                                 f"identities; choose 1..{len(pids) - 1}")
    held = set(np.random.default_rng(seed).choice(pids, size=num_ids, replace=False).tolist())
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for pid in sorted(held):
        images = [r for r in train if r.pid == pid]
        query.append(images[0])
        gallery += images[1:]
    if not cameras:
        gallery = [r._replace(camid=i) for i, r in enumerate(gallery)]
        query = [r._replace(camid=len(gallery) + i) for i, r in enumerate(query)]
    return [r for r in train if r.pid not in held], query, gallery
