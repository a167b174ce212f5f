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

from reidkit.data.dataset import ReIDDataset, relabel
from reidkit.data.datasets._common import (
    check_split,
    find_base,
    layout_error,
    read_camera_pair,
    single_shot_split,
)
from reidkit.data.datasets.registry import register

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
    cams, notes = read_camera_pair(base, _NAME, _SAMPLE)
    shared = {p for p in cams[0].keys() & cams[1].keys() if p <= SHARED}
    if len(shared) < 2:
        raise layout_error("prid2011", base, f"fewer than two of persons 1..{SHARED} appear in both cameras",
                           f"cam_a/ and cam_b/ holding images named like {_SAMPLE}", _SOURCE)

    pairs = {p: (cams[0][p], cams[1][p]) for p in shared}
    train, query, gallery = single_shot_split(
        pairs, len(shared) // 2, split=split, seed=seed, dataset="prid2011"
    )
    # the camera-B persons past SHARED are nobody's match: gallery distractors
    gallery += [cams[1][p] for p in sorted(cams[1]) if p > SHARED]
    return ReIDDataset(
        "prid2011", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
