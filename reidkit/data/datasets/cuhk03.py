"""CUHK03 (Li et al., CVPR 2014): ``labeled`` (hand-drawn) and ``detected`` (DPM) person boxes.

Sources read:

* ``cuhk03_release/cuhk-03.mat`` — MATLAB v7.3 (HDF5). ``labeled`` and ``detected`` each hold one
  cell per camera pair (5 pairs), a persons x 10 cell array of image references; images 1-5 come
  from the pair's first view, 6-10 from its second, and empty cells mark missing images.
  ``testsets`` holds the 20 classic test sets of 100 (camera pair, person) pairs, 1-based.
* ``cuhk03_new_protocol_config_{labeled,detected}.mat`` — MATLAB v5, the 767/700 protocol of Zhong
  et al. (CVPR 2017): ``filelist``, ``labels``, ``camId`` and 1-based ``train_idx``,
  ``query_idx``, ``gallery_idx``.

The images are extracted once to ``images_labeled/`` and ``images_detected/`` as PNG files named
``{pair}_{person:03d}_{view}_{image:02d}.png`` (``1_001_1_01.png``), the names the new-protocol
``filelist`` uses; later loads only list those folders.

Camera ids: CUHK03 has two views per camera pair and five pairs, so a camera is a (pair, view)
and ``camid = 2 * (pair - 1) + (view - 1)`` (0..9); ``camid % 2`` is the view. Taking the view
alone as the camera (as the Pyramid release did) merges the cameras of different pairs.

Classic protocol (Li et al.): split ``i`` tests on ``testsets[i]``; of the 1,360 identities of
camera pairs 1-3 (the data set of the original paper) the remaining 1,260 give ``val_ids`` (100)
seeded validation identities and 1,160 training identities. The query holds the test identities'
first-view images and the gallery their second-view images (the ``cuhk03`` evaluation protocol
then draws one gallery image per identity). Classic pids are ``1000 * pair + person``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidkit.data.dataset import ImageRecord, ReIDDataset, relabel
from reidkit.data.datasets._common import check_split, layout_error, prefix, split_rng
from reidkit.data.datasets.registry import register

if TYPE_CHECKING:
    import h5py

log = logging.getLogger(__name__)

VARIANTS = ("labeled", "detected")
PROTOCOLS = ("new", "classic")
CLASSIC_PAIRS = (1, 2, 3)
_NAME = re.compile(r"(\d)_(\d{3})_([12])_(\d{2})\.png")
_MAT = "cuhk-03.mat"
_CONFIG = "cuhk03_new_protocol_config_{}.mat"
_CONFIG_KEYS = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")
_LAYOUT = (
    "{root}/ (or {root}/cuhk03/) holding cuhk03_release/cuhk-03.mat (MATLAB v7.3) and, for the "
    "new protocol, cuhk03_new_protocol_config_labeled.mat and "
    "cuhk03_new_protocol_config_detected.mat; images are extracted once into images_labeled/ "
    "and images_detected/ (files like 1_001_1_01.png)"
)
_SOURCE = (
    "cuhk03_release.zip from the CUHK re-identification page of Xiaogang Wang's group (Li et al., "
    "CVPR 2014, 'DeepReID'); the new-protocol .mat files from the CUHK03-NP release of Zhong et "
    "al. (CVPR 2017, 'Re-ranking Person Re-identification with k-reciprocal Encoding')"
)


def camid_of(pair: int, view: int) -> int:
    """Camera index of ``view`` (1 or 2) of camera ``pair`` (1..5): 2 * (pair - 1) + view - 1."""
    return 2 * (pair - 1) + view - 1


def _find_base(root: Path) -> Path | None:
    markers = ("cuhk03_release", _MAT, _CONFIG.format("labeled"), _CONFIG.format("detected"),
               "images_labeled", "images_detected")
    for base in (root, root / "cuhk03", root / "CUHK03"):
        if any((base / m).exists() for m in markers):
            return base
    return None


def _find_mat(base: Path) -> Path | None:
    for path in (base / "cuhk03_release" / _MAT, base / _MAT):
        if path.is_file():
            return path
    return None


def _open_h5(mat: Path) -> h5py.File:
    import h5py  # imported on use: only CUHK03 needs it

    try:
        return h5py.File(mat, "r")
    except OSError as exc:
        raise ValueError(
            f"cannot read {mat} as a MATLAB v7.3 (HDF5) file ({exc}); expected the cuhk-03.mat "
            "of cuhk03_release.zip"
        ) from exc


def read_testsets(mat: Path) -> list[list[tuple[int, int]]]:
    """The classic test sets of ``cuhk-03.mat``: per set, 1-based (camera pair, person) pairs."""
    with _open_h5(mat) as f:
        if "testsets" not in f:
            raise ValueError(f"{mat} has no 'testsets'; expected the cuhk-03.mat of the release")
        sets = []
        for ref in np.ravel(f["testsets"][()]):
            pairs = np.asarray(f[ref][()])
            # MATLAB stores the n x 2 array column-major, so HDF5 shows it as 2 x n.
            pairs = pairs.T if pairs.shape[0] == 2 else pairs
            sets.append([(int(a), int(b)) for a, b in pairs])
    return sets


def extract_images(mat: Path, variant: str, dest: Path) -> int:
    """Write every ``variant`` image of ``cuhk-03.mat`` to ``dest`` as PNG; return the count.

    The files are written to a temporary sibling folder renamed to ``dest`` at the end, so an
    interrupted extraction never leaves a partial ``dest`` behind.
    """
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    except OSError as exc:
        raise OSError(
            f"cannot write the extracted CUHK03 images next to {dest} ({exc}); make "
            f"{dest.parent} writable or copy the data set to a writable folder"
        ) from exc
    from PIL import Image

    log.info("extracting CUHK03 %s images from %s into %s (done once)", variant, mat, dest)
    count = 0
    try:
        with _open_h5(mat) as f:
            if variant not in f:
                raise ValueError(f"{mat} holds no '{variant}' images")
            for pair, pair_ref in enumerate(np.ravel(f[variant][()]), start=1):
                cells = f[pair_ref][()]
                # MATLAB's persons x 10 cell array appears transposed (10 x persons) in HDF5.
                if cells.shape[0] != 10 and cells.shape[-1] == 10:
                    cells = cells.T
                for person in range(cells.shape[1]):
                    for k in range(cells.shape[0]):
                        img = np.asarray(f[cells[k, person]][()])
                        if img.ndim != 3 or img.size == 0:  # empty cell: no such image
                            continue
                        view = 1 if k < 5 else 2
                        name = f"{pair}_{person + 1:03d}_{view}_{k + 1:02d}.png"
                        # HDF5 holds MATLAB's H x W x 3 column-major, i.e. 3 x W x H.
                        Image.fromarray(np.ascontiguousarray(img.T)).save(tmp / name)
                        count += 1
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(tmp)  # another process finished the same extraction first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _mat_str(cell: object) -> str:
    """A string stored in a MATLAB cell as loaded by scipy (nested 1-element arrays)."""
    while isinstance(cell, np.ndarray):
        cell = cell.ravel()[0] if cell.size else ""
    return str(cell)


def _image_names(base: Path, variant: str, notes: list[str]) -> tuple[Path, set[str]]:
    """The images folder of ``variant`` and its file names, extracting it first if needed."""
    folder = base / f"images_{variant}"
    if not folder.is_dir():
        mat = _find_mat(base)
        if mat is None:
            raise layout_error(
                "cuhk03", base, f"neither images_{variant}/ nor cuhk03_release/{_MAT} found",
                _LAYOUT.format(root=base), _SOURCE,
            )
        count = extract_images(mat, variant, folder)
        notes.append(f"extracted {count} {variant} images from {mat} into {folder}")
    with os.scandir(folder) as entries:
        return folder, {e.name for e in entries}


def _new_protocol(base: Path, variant: str, notes: list[str]) -> ReIDDataset:
    config = base / _CONFIG.format(variant)
    if not config.is_file():
        raise layout_error("cuhk03", base, f"{config.name} not found",
                           _LAYOUT.format(root=base), _SOURCE)
    import scipy.io  # imported on use: only CUHK03 needs it

    try:
        cfg = scipy.io.loadmat(config)
    except (ValueError, NotImplementedError, OSError, scipy.io.matlab.MatReadError) as exc:
        raise ValueError(
            f"cannot read {config} ({exc}); expected the MATLAB v5 file of the CUHK03-NP release"
        ) from exc
    missing_keys = [k for k in _CONFIG_KEYS if k not in cfg]
    if missing_keys:
        raise ValueError(f"{config} lacks {', '.join(missing_keys)}; is it the CUHK03-NP file?")
    folder, names = _image_names(base, variant, notes)
    filelist = [_mat_str(c) for c in cfg["filelist"].ravel()]
    pre = prefix(folder)
    labels = cfg["labels"].ravel().astype(np.int64)

    def records(key: str) -> list[ImageRecord]:
        out = []
        for i in cfg[key].ravel().astype(np.int64) - 1:
            name = filelist[i]
            m = _NAME.fullmatch(name)
            if m is None:
                raise ValueError(f"{config}: unexpected file name {name!r} in filelist")
            out.append(ImageRecord(pre + name, int(labels[i]),
                                   camid_of(int(m.group(1)), int(m.group(3)))))
        return out

    train, query, gallery = records("train_idx"), records("query_idx"), records("gallery_idx")
    absent = sorted({os.path.basename(r.path) for r in train + query + gallery} - names)
    if absent:
        raise layout_error(
            "cuhk03", folder,
            f"{len(absent)} image(s) named in {config.name} are missing, e.g. {absent[0]}; "
            f"delete {folder} to extract it again from {_MAT}",
            _LAYOUT.format(root=base), _SOURCE,
        )
    return ReIDDataset(f"cuhk03_{variant}", relabel(train), query, gallery, notes=notes)


def _classic_protocol(
    base: Path, variant: str, split: int, val_ids: int, seed: int, notes: list[str]
) -> ReIDDataset:
    mat = _find_mat(base)
    if mat is None:
        raise layout_error("cuhk03", base, f"cuhk03_release/{_MAT} not found (the classic "
                           "splits are stored in it)", _LAYOUT.format(root=base), _SOURCE)
    testsets = read_testsets(mat)
    check_split(split, len(testsets), "cuhk03 (classic protocol)")
    folder, names = _image_names(base, variant, notes)
    persons: dict[tuple[int, int], list[ImageRecord]] = defaultdict(list)
    pre = prefix(folder)
    for name in sorted(names):
        m = _NAME.fullmatch(name)
        if m is not None:
            pair, person = int(m.group(1)), int(m.group(2))
            camid = camid_of(pair, int(m.group(3)))
            persons[pair, person].append(ImageRecord(pre + name, 1000 * pair + person,
                                                     camid))
    test = set(testsets[split])
    pool = sorted(k for k in persons if k[0] in CLASSIC_PAIRS and k not in test)
    if not 0 <= val_ids < len(pool):
        raise ValueError(f"cuhk03: val_ids={val_ids} must lie in 0..{len(pool) - 1}")
    picked = split_rng(seed, split).choice(len(pool), size=val_ids, replace=False)
    val = {pool[i] for i in picked.tolist()}
    test_records = [r for k in sorted(test) for r in persons.get(k, [])]
    dataset = ReIDDataset(
        f"cuhk03_{variant}",
        relabel([r for k in pool if k not in val for r in persons[k]]),
        [r for r in test_records if r.camid % 2 == 0],
        [r for r in test_records if r.camid % 2 == 1],
        split=split,
        num_splits=len(testsets),
        notes=notes,
    )
    # ReIDDataset has no validation field; the held-out identities ride along as an attribute.
    dataset.val = [r for k in sorted(val) for r in persons[k]]
    return dataset


@register("cuhk03")
def load_cuhk03(
    root: Path,
    *,
    variant: str = "labeled",
    protocol: str = "new",
    split: int = 0,
    val_ids: int = 100,
    seed: int = 0,
) -> ReIDDataset:
    """CUHK03 ``variant`` ("labeled"/"detected") under ``protocol`` ("new"/"classic").

    New protocol: 767 training ids (7,368 labeled / 7,365 detected images), 1,400 queries,
    5,328 / 5,332 gallery images. Classic: split ``split`` of 20, 1,160 training ids, ``val_ids``
    validation ids (exposed as the ``val`` attribute, original pids) and 100 test ids.
    """
    if variant not in VARIANTS:
        raise ValueError(f"cuhk03: variant must be one of {VARIANTS}, got {variant!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"cuhk03: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    base = _find_base(root)
    if base is None:
        problem = "folder not found" if not root.is_dir() else "no CUHK03 files found"
        raise layout_error("cuhk03", root, problem, _LAYOUT.format(root=root), _SOURCE)
    notes: list[str] = ["camid = 2 * (camera pair - 1) + view - 1 (10 cameras); view = camid % 2"]
    if protocol == "new":
        return _new_protocol(base, variant, notes)
    return _classic_protocol(base, variant, split, val_ids, seed, notes)


register("cuhk03labeled")(partial(load_cuhk03, variant="labeled"))
register("cuhk03detected")(partial(load_cuhk03, variant="detected"))
