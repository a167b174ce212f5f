"""PRID2011 single-shot (Hirzer et al., SCIA 2011).

Files ``single_shot/cam_a/person_0001.png`` (385 persons) and ``single_shot/cam_b/person_0001.png``
(749 persons). Persons 1..200 are the same people in both cameras; higher numbers are different
people in each camera. Protocol: 10 seeded splits of the 200 shared persons into 100 training /
100 test; query = the test persons' camera-A images (camid 0), gallery = their camera-B images
plus camera-B persons 201..749 (100 + 549 = 649, camid 1). Camera-A persons 201..385 are not used.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets import register
from reidkit.data.datasets._common import (
    check_split,
    find_base,
    layout_error,
    prefix,
    scan,
    split_ids,
    split_rng,
    stray_note,
)

NUM_SPLITS = 10
SHARED = 200  # persons 1..SHARED appear in both cameras
_NAME = re.compile(r"person_(\d+)\.(?:png|jpg|jpeg|bmp)", re.IGNORECASE)
_SAMPLE = "person_0001.png"
_SOURCE = (
    "the PRID 2011 page of the Institute of Computer Graphics and Vision, TU Graz (Hirzer et al., "
    "SCIA 2011, 'Person Re-Identification by Descriptive and Discriminative Classification')"
)


@register("prid2011", "prid")
def load_prid2011(root: Path, *, split: int = 0, seed: int = 0) -> ReIDDataset:
    """PRID2011 single-shot split ``split`` (0..9): 100 probes against a 649-image gallery."""
    check_split(split, NUM_SPLITS, "prid2011")
    base = find_base(
        root, ("cam_a", "cam_b"), ("single_shot", "prid_2011/single_shot", "prid2011/single_shot")
    )
    if base is None:
        raise layout_error(
            "prid2011",
            root,
            "no single_shot/cam_a/ and single_shot/cam_b/ folders",
            f"{root}/single_shot/ (or {root}/prid_2011/single_shot/) holding cam_a/ and cam_b/ "
            f"with one image per person named like {_SAMPLE}",
            _SOURCE,
        )
    cams: list[dict[int, ImageRecord]] = []
    notes: list[str] = []
    for camid, sub in enumerate(("cam_a", "cam_b")):
        matched, strays = scan(base / sub, _NAME)
        pre = prefix(base / sub)
        notes += stray_note(strays, sub + "/", _SAMPLE)
        cams.append(
            {int(m.group(1)): ImageRecord(pre + n, int(m.group(1)), camid)
             for n, m in matched}
        )
    shared = {p for p in cams[0].keys() & cams[1].keys() if p <= SHARED}
    if len(shared) < 2:
        raise layout_error("prid2011", base, f"fewer than two of persons 1..{SHARED} appear in both cameras",
                           f"cam_a/ and cam_b/ holding images named like {_SAMPLE}", _SOURCE)

    train_ids, test_ids = split_ids(shared, len(shared) // 2, split_rng(seed, split), "prid2011")
    train = [cams[c][p] for p in train_ids for c in (0, 1)]
    query = [cams[0][p] for p in test_ids]
    gallery = [cams[1][p] for p in test_ids]
    gallery += [cams[1][p] for p in sorted(cams[1]) if p > SHARED]
    return ReIDDataset(
        "prid2011", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
