"""DukeMTMC-reID (Zheng et al., ICCV 2017; boxes from DukeMTMC, Ristani et al., 2016).

Market-style folders with names such as ``0005_c2_f0046985.jpg`` (pid, camera, frame). The 408
gallery-only distractor identities carry ordinary pids.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidkit.data.dataset import ReIDDataset
from reidkit.data.datasets.market1501 import parse_market_style
from reidkit.data.datasets.registry import register

# Same id rules as Market-1501 (see market1501._MARKET): -1 or 1-9 ASCII digits, camera from 1.
_DUKE = re.compile(r"(-1|\d{1,9})_c([1-9]\d{0,8})_f\d+\.(?:jpg|jpeg|png)", re.IGNORECASE | re.ASCII)
_SAMPLE = "0005_c2_f0046985.jpg"
_PARENTS = ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid")
_SOURCE = (
    "the DukeMTMC-reID release of Zhedong Zheng et al. (ICCV 2017, 'Unlabeled Samples Generated "
    "by GAN Improve the Person Re-identification Baseline in vitro'); unpack DukeMTMC-reID.zip"
)


@register("dukemtmcreid", "duke")
def load_dukemtmcreid(root: Path) -> ReIDDataset:
    """DukeMTMC-reID: 702 ids / 16,522 train images, 2,228 queries, 17,661 gallery, 8 cameras.

    ``root`` is the unpacked folder or its parent holding ``DukeMTMC-reID/``.
    """
    return parse_market_style(
        "dukemtmcreid", root, pattern=_DUKE, sample=_SAMPLE, parents=_PARENTS, source=_SOURCE
    )
