"""Market-1501 (Zheng et al., ICCV 2015) and the shared parser of Market-style folders.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with names such as
``0002_c1s1_000451_03.jpg`` (pid, camera, sequence, frame, box). Pid -1 marks junk boxes (dropped);
pid 0 marks distractors, kept in the gallery where they never match a query.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets import register
from reidkit.data.datasets._common import find_base, layout_error, scan, stray_note

SUBSETS = ("bounding_box_train", "query", "bounding_box_test")

# Pid -1 or 1-9 ASCII digits, camera from 1: other signs, camera 0, unicode digits and numbers too
# big for int64 ids are not official names and are skipped as strays.
_MARKET = re.compile(
    r"(-1|\d{1,9})_c([1-9]\d{0,8})s\d+_\d+_\d+\.(?:jpg|jpeg|png)", re.IGNORECASE | re.ASCII
)
_SAMPLE = "0002_c1s1_000451_03.jpg"
_PARENTS = ("Market-1501-v15.09.15", "Market-1501", "market1501")
_SOURCE = (
    "the Market-1501 project page of Liang Zheng et al. (ICCV 2015, 'Scalable Person "
    "Re-identification: A Benchmark'); unpack Market-1501-v15.09.15.zip"
)


def parse_market_style(
    dataset: str,
    root: Path,
    *,
    pattern: re.Pattern[str],
    sample: str,
    parents: tuple[str, ...],
    source: str,
) -> ReIDDataset:
    """Parse the three Market-style folders under ``root`` (or under ``root/<parent>``).

    ``pattern`` must capture the pid (group 1: -1 or ASCII digits) and the 1-based camera
    (group 2: ASCII digits, at least 1) of a file name; names it rejects are counted as skipped.
    Junk (pid -1) is dropped everywhere; distractors (pid 0) are kept in the gallery only.
    """
    base = find_base(root, SUBSETS, parents)
    if base is None:
        # report against the candidate folder that holds part of the layout, if any
        partial = next((c for c in (root, *(root / p for p in parents))
                        if any((c / s).is_dir() for s in SUBSETS)), root)
        missing = [f"{partial / s}/" for s in SUBSETS if not (partial / s).is_dir()]
        layout = (
            f"{root}/ (or {root}/{parents[0]}/) holding {', '.join(s + '/' for s in SUBSETS)} "
            f"with images named like {sample}"
        )
        problem = (
            "folder not found" if not root.is_dir() else f"missing {', '.join(missing)}"
        )
        raise layout_error(dataset, root, problem, layout, source)

    notes: list[str] = []
    subsets: dict[str, list[ImageRecord]] = {}
    for subset in SUBSETS:
        folder = base / subset
        matched, strays = scan(folder, pattern)
        records: list[ImageRecord] = []
        junk = distractors = 0
        for path, m in matched:
            pid = int(m.group(1))
            if pid == -1:
                junk += 1
            elif pid == 0 and subset != "bounding_box_test":
                distractors += 1
            else:
                records.append(ImageRecord(path, pid, int(m.group(2)) - 1))
        notes += stray_note(strays, f"{subset}/", sample)
        if junk:
            notes.append(f"dropped {junk} junk image(s) (pid -1) from {subset}/")
        if distractors:
            notes.append(f"dropped {distractors} distractor image(s) (pid 0) from {subset}/")
        subsets[subset] = records
    return ReIDDataset(
        dataset,
        relabel(subsets["bounding_box_train"]),
        subsets["query"],
        subsets["bounding_box_test"],
        notes=notes,
    )


@register("market1501")
def load_market1501(root: Path) -> ReIDDataset:
    """Market-1501: 751 ids / 12,936 train images, 3,368 queries, 15,913 gallery, 6 cameras.

    ``root`` is the unpacked folder or its parent holding ``Market-1501-v15.09.15/``.
    """
    return parse_market_style(
        "market1501", root, pattern=_MARKET, sample=_SAMPLE, parents=_PARENTS, source=_SOURCE
    )
