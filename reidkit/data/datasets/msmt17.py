"""MSMT17 (Wei et al., CVPR 2018), releases V1 and V2.

The split is given by four list files of ``relative/path pid`` lines; the camera is the third
``_`` field of the file name, 1-based (``0000_000_01_0303morning_0015_0.jpg`` is camera 1). Image
folders: V1 ``train/`` and ``test/``, V2 (faces masked) ``mask_train_v2/`` and ``mask_test_v2/``.
Only the lists are read, never the image folders' contents.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidkit.data.dataset import ImageRecord, ReIDDataset
from reidkit.data.datasets._common import layout_error, prefix
from reidkit.data.datasets.registry import register

_FOLDERS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
_NUMBER = re.compile(r"[0-9]{1,9}")  # no sign, no '_' grouping, fits int64
_SOURCE = (
    "the MSMT17 page of Peking University's VMC group (Wei et al., CVPR 2018, 'Person Transfer "
    "GAN to Bridge Domain Gap for Person Re-Identification'); the data set is released on request"
)


def _find(root: Path, version: str | None) -> tuple[Path, str]:
    versions = [version] if version else ["v1", "v2"]
    for v in versions:
        train_dir, test_dir = _FOLDERS[v]
        for base in (root, root / f"MSMT17_{v.upper()}"):
            if (base / train_dir).is_dir() and (base / test_dir).is_dir() and all(
                (base / name).is_file() for name in _LISTS
            ):
                return base, v
    layout = (
        f"{root}/ (or {root}/MSMT17_V1/, {root}/MSMT17_V2/) holding {', '.join(_LISTS)} "
        "(lines like '0000/0000_000_01_0303morning_0015_0.jpg 0') and the image folders "
        "train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)"
    )
    problem = "folder not found" if not root.is_dir() else "list files or image folders missing"
    raise layout_error("msmt17", root, problem, layout, _SOURCE)


def _parse_line(fields: list[str], pre: str) -> ImageRecord | None:
    """The record of one ``relative/path pid`` line, or None when it is not shaped like one."""
    if len(fields) != 2:
        return None
    rel, pid = fields
    parts = rel.rsplit("/", 1)[-1].split("_")
    if len(parts) < 3 or not (_NUMBER.fullmatch(pid) and _NUMBER.fullmatch(parts[2])):
        return None
    camera = int(parts[2])
    return ImageRecord(pre + rel, int(pid), camera - 1) if camera >= 1 else None


def _read_list(path: Path, folder: Path) -> tuple[list[ImageRecord], int]:
    """Records of one list file and the number of lines that do not parse."""
    records: list[ImageRecord] = []
    bad = 0
    pre = prefix(folder)
    # surrogateescape: bytes that are not UTF-8 survive into the path, as os.listdir keeps them,
    # instead of aborting the whole list with a UnicodeDecodeError
    with open(path, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            fields = line.split()
            if not fields:
                continue
            record = _parse_line(fields, pre)
            if record is None:
                bad += 1
            else:
                records.append(record)
    return records, bad


@register("msmt17")
def load_msmt17(
    root: Path, *, version: str | None = None, val_as_train: bool = True
) -> ReIDDataset:
    """MSMT17: 1,041 ids / 32,621 train images, 11,659 queries, 82,161 gallery, 15 cameras.

    ``version`` is "v1", "v2" or None (whichever is found, V1 first). The official training set
    is ``list_train`` (30,248) + ``list_val`` (2,373); with ``val_as_train=False`` the training
    set is ``list_train`` only. Either way the ``list_val`` records are exposed as the returned
    data set's ``val`` attribute, with training labels (its identities are training identities),
    as the natural validation split.
    """
    if version is not None:
        version = str(version).lower()
        version = version if version.startswith("v") else "v" + version
        if version not in _FOLDERS:
            raise ValueError(f"msmt17: version must be 'v1' or 'v2', got {version!r}")
    base, version = _find(root, version)
    train_dir, test_dir = (base / d for d in _FOLDERS[version])

    notes = [f"MSMT17 {version.upper()} from {base}"]
    parsed: dict[str, list[ImageRecord]] = {}
    for name, folder in zip(_LISTS, (train_dir, train_dir, test_dir, test_dir), strict=True):
        parsed[name], bad = _read_list(base / name, folder)
        if bad:
            notes.append(
                f"skipped {bad} line(s) of {name} not shaped like "
                "'0000/0000_000_01_0303morning_0015_0.jpg 0'"
            )
    train, val = parsed["list_train.txt"], parsed["list_val.txt"]
    if val_as_train:
        train = train + val
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in train}))}
    unseen = sum(r.pid not in mapping for r in val)
    if unseen:
        notes.append(f"{unseen} list_val image(s) of identities absent from training left out")
    dataset = ReIDDataset(
        "msmt17",
        [ImageRecord(r.path, mapping[r.pid], r.camid) for r in train],
        parsed["list_query.txt"],
        parsed["list_gallery.txt"],
        notes=notes,
    )
    # ReIDDataset has no validation field; the list_val records ride along as an attribute.
    dataset.val = [ImageRecord(r.path, mapping[r.pid], r.camid) for r in val if r.pid in mapping]
    return dataset
