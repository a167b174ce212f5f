"""VIPeR (Gray et al., PETS 2007): 632 identities, one image per identity in each of two cameras.

Files ``cam_a/000_45.bmp`` and ``cam_b/000_90.bmp``: the person number, then the viewpoint angle.
Protocol: 10 seeded splits of 316 training / 316 test identities; query = the test identities'
camera-A images (camid 0), gallery = their camera-B images (camid 1).
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
_NAME = re.compile(r"(\d+)_\d+\.(?:bmp|png|jpg|jpeg)", re.IGNORECASE)
_SAMPLE = "000_45.bmp"
_SOURCE = (
    "the VIPeR page of UC Santa Cruz (Gray, Brennan and Tao, PETS 2007, 'Evaluating Appearance "
    "Models for Recognition, Reacquisition, and Tracking'); unpack VIPeR.v1.0.zip"
)


@register("viper")
def load_viper(root: Path, *, split: int = 0, seed: int = 0) -> ReIDDataset:
    """VIPeR split ``split`` (0..9): half of the identities train, the other half test."""
    check_split(split, NUM_SPLITS, "viper")
    base = find_base(root, ("cam_a", "cam_b"), ("VIPeR",))
    if base is None:
        raise layout_error(
            "viper",
            root,
            "no cam_a/ and cam_b/ folders",
            f"{root}/ (or {root}/VIPeR/) holding cam_a/ and cam_b/, one image per person and "
            f"camera named like {_SAMPLE} (person 000, angle 45)",
            _SOURCE,
        )
    cams, notes = read_camera_pair(base, _NAME, _SAMPLE)
    shared = cams[0].keys() & cams[1].keys()
    if not shared:
        raise layout_error("viper", base, "no person appears in both cam_a/ and cam_b/",
                           f"cam_a/ and cam_b/ holding images named like {_SAMPLE}", _SOURCE)
    if len(shared) < max(len(cams[0]), len(cams[1])):
        notes.append(f"left out {len(cams[0]) + len(cams[1]) - 2 * len(shared)} image(s) of "
                     "persons seen by one camera only")

    pairs = {p: (cams[0][p], cams[1][p]) for p in shared}
    train, query, gallery = single_shot_split(
        pairs, len(shared) // 2, split=split, seed=seed, dataset="viper"
    )
    return ReIDDataset(
        "viper", relabel(train), query, gallery, split=split, num_splits=NUM_SPLITS, notes=notes
    )
