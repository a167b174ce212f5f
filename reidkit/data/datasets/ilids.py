"""QMUL i-LIDS (Zheng, Gong and Xiang, BMVC 2009): 119 identities, 476 images from airport cameras.

Files ``0001001.jpg``: a 4-digit person and a 3-digit image index, in ``images/`` (the common
re-ID packaging) or ``i-LIDS_Pedestrian/Persons/`` (the original archive).

The release has no camera labels. Protocol: 10 seeded splits of 60 training / 59 test identities
(MTDnet's recorded split, ``BuildData/BuildData_iLIDS.py``);
per test identity two images are drawn at random, the first is the query (camid 0) and the second
the gallery entry (camid 1). Training images get camids 0/1 alternately in file order, so that
cross-camera samplers find both "views" of every identity with two or more images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets._common import check_split, layout_error, scan, single_shot_split, stray_note
from reidkit.data.datasets.registry import register

NUM_SPLITS = 10
_NAME = re.compile(r"(\d{4})(\d{3})\.(?:jpg|jpeg|png|bmp)", re.IGNORECASE)
_SAMPLE = "0001001.jpg"
_FOLDERS = ("images", "Persons", "i-LIDS_Pedestrian/Persons", "QMUL-iLIDS/images",
            "i-LIDS/images", ".")
_SOURCE = (
    "the QMUL i-LIDS re-identification release of Queen Mary University of London (Zheng, "
    "Gong and Xiang, BMVC 2009, 'Associating Groups of People'), i-LIDS_Pedestrian.tgz"
)


def _pick_two(images: Sequence[ImageRecord], rng: np.random.Generator) -> tuple[ImageRecord, ImageRecord]:
    """Two distinct random images: the first the query (camid 0), the second the gallery (camid 1)."""
    q, g = rng.choice(len(images), size=2, replace=False).tolist()
    return images[q]._replace(camid=0), images[g]._replace(camid=1)


@register("ilids", "qmulilids")
def load_ilids(root: Path, *, split: int = 0, test_ids: int = 59, seed: int = 0) -> ReIDDataset:
    """QMUL i-LIDS split ``split`` (0..9) with ``test_ids`` test identities (59 by default)."""
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
    by_pid: dict[int, list[ImageRecord]] = defaultdict(list)
    for path, m in matched:
        pid = int(m.group(1))
        by_pid[pid].append(ImageRecord(path, pid, len(by_pid[pid]) % 2))
    notes = stray_note(strays, str(folder), _SAMPLE)
    # A test identity needs two images: one query, one gallery.
    candidates = [p for p, images in by_pid.items() if len(images) >= 2]
    train, query, gallery = single_shot_split(
        by_pid, test_ids, split=split, seed=seed, dataset="ilids", candidates=candidates, pick=_pick_two
    )
    return ReIDDataset(
        "ilids", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
