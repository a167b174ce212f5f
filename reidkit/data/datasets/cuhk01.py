"""CUHK01 (Li et al., ACCV 2012): 971 identities, two images in each of two camera views.

Files ``campus/0001001.png``: a 4-digit person and a 3-digit image index; images 001-002 come
from camera A (camid 0), 003-004 from camera B (camid 1).

Protocol (single-shot, as in the MTDnet paper): per seeded split, ``test_ids`` identities are held
out (100 gives 871/100, 486 gives 485/486); the query holds one randomly chosen camera-A image per
test identity and the gallery one camera-B image per test identity; training uses all four images
of the other identities.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets._common import (
    check_split,
    find_base,
    layout_error,
    scan,
    single_shot_split,
    stray_note,
)
from reidkit.data.datasets.registry import register

NUM_SPLITS = 10
_NAME = re.compile(r"(\d{4})(\d{3})\.(?:png|jpg|jpeg|bmp)", re.IGNORECASE)
_SAMPLE = "0001001.png"
_SOURCE = (
    "the CUHK re-identification page of Xiaogang Wang's group (Li, Zhao and Wang, ACCV 2012, "
    "'Human Reidentification with Transferred Metric Learning'); unpack CUHK01.zip"
)


def _pick_views(images: Sequence[ImageRecord], rng: np.random.Generator) -> tuple[ImageRecord, ImageRecord]:
    """A random camera-A image as query and a random camera-B image as gallery entry."""
    a, b = ([r for r in images if r.camid == camid] for camid in (0, 1))
    return a[int(rng.integers(len(a)))], b[int(rng.integers(len(b)))]


@register("cuhk01")
def load_cuhk01(root: Path, *, split: int = 0, test_ids: int = 100, seed: int = 0) -> ReIDDataset:
    """CUHK01 split ``split`` (0..9) with ``test_ids`` test identities (100 or 486)."""
    check_split(split, NUM_SPLITS, "cuhk01")
    base = find_base(root, ("campus",), ("CUHK01", "cuhk01"))
    folder = base / "campus" if base is not None else None
    matched, strays = scan(folder, _NAME) if folder is not None else ([], [])
    if not matched:
        raise layout_error(
            "cuhk01",
            root,
            "no campus/ folder with images" if folder is None else f"no images in {folder}",
            f"{root}/campus/ (or {root}/CUHK01/campus/) holding 3,884 images named like "
            f"{_SAMPLE} (person 0001, image 001; images 001-002 camera A, 003-004 camera B)",
            _SOURCE,
        )
    by_pid: dict[int, list[ImageRecord]] = defaultdict(list)
    for path, m in matched:
        camid = 0 if int(m.group(2)) <= 2 else 1
        by_pid[int(m.group(1))].append(ImageRecord(path, int(m.group(1)), camid))
    # Only identities seen by both cameras can be probed single-shot across views.
    usable = {p for p, recs in by_pid.items() if {r.camid for r in recs} == {0, 1}}
    notes = stray_note(strays, "campus/", _SAMPLE)
    if len(usable) < len(by_pid):
        notes.append(f"{len(by_pid) - len(usable)} identities lack one camera view: train only")

    train, query, gallery = single_shot_split(
        by_pid, test_ids, split=split, seed=seed, dataset="cuhk01", candidates=usable, pick=_pick_views
    )
    return ReIDDataset(
        "cuhk01", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
