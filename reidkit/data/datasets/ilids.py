"""QMUL i-LIDS (Zheng, Gong and Xiang, BMVC 2009): 119 identities, 476 images from airport cameras.

Files ``0001001.jpg``: a 4-digit person and a 3-digit image index, in ``images/`` (the common
re-ID packaging) or ``i-LIDS_Pedestrian/Persons/`` (the original archive).

The release has no camera labels. Protocol: 10 seeded splits of 59 training / 60 test identities;
per test identity two images are drawn at random, the first is the query (camid 0) and the second
the gallery entry (camid 1). Training images get camids 0/1 alternately in file order, so that
cross-camera samplers find both "views" of every identity with two or more images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets import register
from reidkit.data.datasets._common import (
    check_split,
    layout_error,
    prefix,
    scan,
    split_ids,
    split_rng,
    stray_note,
)

NUM_SPLITS = 10
_NAME = re.compile(r"(\d{4})(\d{3})\.(?:jpg|jpeg|png|bmp)", re.IGNORECASE)
_SAMPLE = "0001001.jpg"
_FOLDERS = ("images", "Persons", "i-LIDS_Pedestrian/Persons", "QMUL-iLIDS/images",
            "i-LIDS/images", ".")
_SOURCE = (
    "the QMUL i-LIDS re-identification release of Queen Mary University of London (Zheng, "
    "Gong and Xiang, BMVC 2009, 'Associating Groups of People'), i-LIDS_Pedestrian.tgz"
)


@register("ilids", "qmulilids")
def load_ilids(root: Path, *, split: int = 0, test_ids: int = 60, seed: int = 0) -> ReIDDataset:
    """QMUL i-LIDS split ``split`` (0..9) with ``test_ids`` test identities (60 by default)."""
    check_split(split, NUM_SPLITS, "ilids")
    for sub in _FOLDERS:
        folder = root / sub
        if folder.is_dir():
            matched, strays = scan(folder, _NAME)
            if matched:
                break
    else:
        raise layout_error(
            "ilids",
            root,
            "no folder of i-LIDS images found",
            f"{root}/images/ (or {root}/i-LIDS_Pedestrian/Persons/) holding 476 images named "
            f"like {_SAMPLE} (person 0001, image 001)",
            _SOURCE,
        )
    by_pid: dict[int, list[str]] = defaultdict(list)
    pre = prefix(folder)
    for name, m in matched:
        by_pid[int(m.group(1))].append(pre + name)
    notes = stray_note(strays, str(folder), _SAMPLE)
    # A test identity needs two images: one query, one gallery.
    candidates = [p for p, paths in by_pid.items() if len(paths) >= 2]
    rng = split_rng(seed, split)
    _, test = split_ids(candidates, test_ids, rng, "ilids")
    test_set = set(test)
    train = [
        ImageRecord(path, pid, i % 2)
        for pid in sorted(by_pid) if pid not in test_set
        for i, path in enumerate(by_pid[pid])
    ]
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for pid in test:
        q, g = rng.choice(len(by_pid[pid]), size=2, replace=False).tolist()
        query.append(ImageRecord(by_pid[pid][q], pid, 0))
        gallery.append(ImageRecord(by_pid[pid][g], pid, 1))
    return ReIDDataset(
        "ilids", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
