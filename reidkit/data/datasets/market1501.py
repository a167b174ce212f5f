"""Market-1501 (Zheng et al., ICCV 2015) and the shared parser of Market-style folders.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with names such as
``0002_c1s1_000451_03.jpg`` (pid, camera, sequence, frame, box). Pid -1 marks junk boxes (dropped);
pid 0 marks distractors, kept in the gallery where they never match a query.

The Market-1501 + 500k protocol adds the release's separate distractor set (``distractors_500k``,
unpacked by torchreid's convention to ``Market-1501-v15.09.15/images/``) to the gallery. Those
images show no annotated identity: every one becomes pid 0 whatever its name says. Their names
are not relied on: a ``_c<camera>`` field is read where there is one (camera -1 otherwise, which
no query has), any image suffix is accepted, and sub-folders are walked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets._common import find_base, layout_error, scan, stray_note
from reidkit.data.datasets.registry import register

SUBSETS = ("bounding_box_train", "query", "bounding_box_test")

# Pid -1 or 1-9 ASCII digits, camera from 1: other signs, camera 0, unicode digits and numbers too
# big for int64 ids are not official names and are skipped as strays.
_MARKET = re.compile(
    r"(-1|\d{1,9})_c([1-9]\d{0,8})s\d+_\d+_\d+\.(?:jpg|jpeg|png)", re.IGNORECASE | re.ASCII
)
_SAMPLE = "0002_c1s1_000451_03.jpg"
_PARENTS = ("Market-1501-v15.09.15", "Market-1501", "market1501")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_CAMERA = re.compile(r"_c([1-9]\d{0,8})", re.ASCII)
_DISTRACTOR_FOLDER = "images"  # where torchreid's market1501_500k option looks
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
def load_market1501(root: Path, distractors: str | Path | bool | None = None) -> ReIDDataset:
    """Market-1501: 751 ids / 12,936 train images, 3,368 queries, 15,913 gallery, 6 cameras.

    ``root`` is the unpacked folder or its parent holding ``Market-1501-v15.09.15/``.
    ``distractors`` adds the 500k distractor set to the gallery as pid 0 (Market-1501 + 500k): a
    folder of its images, or True for ``images/`` next to ``bounding_box_test/``.
    """
    dataset = parse_market_style(
        "market1501", root, pattern=_MARKET, sample=_SAMPLE, parents=_PARENTS, source=_SOURCE
    )
    if distractors is None or distractors is False:
        return dataset
    if distractors is True:
        folder = (find_base(root, SUBSETS, _PARENTS) or root) / _DISTRACTOR_FOLDER
    else:
        folder = Path(distractors).expanduser()
    extra = distractor_records(folder)
    dataset.gallery.extend(extra)
    dataset.notes.append(f"added {len(extra):,} distractor image(s) (pid 0) from {folder}/ to the "
                         "gallery")
    return dataset


def distractor_records(folder: Path) -> list[ImageRecord]:
    """Every image under ``folder`` (sub-folders included) as pid 0, sorted by path.

    The camera is read from a ``_c<n>`` field of the name where there is one, else -1.
    """
    if not folder.is_dir():
        raise FileNotFoundError(
            f"distractor folder {folder}/ not found; unpack the Market-1501 500k distractor set "
            f"(distractors_500k.zip, from the Market-1501 project page) and pass its folder as "
            f"distractors=, or pass distractors=True with it unpacked to "
            f"Market-1501-v15.09.15/{_DISTRACTOR_FOLDER}/"
        )
    records = []
    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.name.lower().endswith(_IMAGE_SUFFIXES):
                    m = _CAMERA.search(entry.name)
                    camid, camera = (int(m.group(1)) - 1, m.group(1)) if m else (-1, None)
                    records.append(ImageRecord(entry.path, 0, camid, camera=camera))
    if not records:
        raise ValueError(f"distractor folder {folder}/ holds no images ({', '.join(_IMAGE_SUFFIXES)}); "
                         "pass the folder the 500k distractor archive unpacks to")
    records.sort(key=lambda r: r.path)
    return records
