"""The small multi-split data sets: CUHK01, VIPeR, QMUL i-LIDS, PRID2011 single-shot."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from reidkit.data import ImageRecord, load_dataset
from reidkit.data.datasets import DatasetLayoutError
from reidkit.data.datasets._common import single_shot_split


def touch_all(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_WRONLY, 0o644))


def base(path: str) -> str:
    return os.path.basename(path)


# ---- CUHK01 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuhk01_root(scratch: Path) -> Path:
    root = scratch / "cuhk01"
    names = [f"{pid:04d}{i:03d}.png" for pid in range(1, 972) for i in range(1, 5)]
    assert len(names) == 3_884
    touch_all(root / "campus", names + ["Thumbs.db"])
    return root


@pytest.mark.parametrize(("test_ids", "train_ids"), [(100, 871), (486, 485)])
def test_cuhk01_protocols(cuhk01_root: Path, test_ids: int, train_ids: int) -> None:
    ds = load_dataset("cuhk01", cuhk01_root, test_ids=test_ids, split=2)
    assert (ds.split, ds.num_splits) == (2, 10)
    assert ds.num_train_pids == train_ids and len(ds.train) == 4 * train_ids
    assert ds.num_train_cams == 2
    assert len(ds.query) == len(ds.gallery) == test_ids
    assert [r.pid for r in ds.query] == [r.pid for r in ds.gallery]  # one image each, same order
    assert all(r.camid == 0 and base(r.path)[4:7] in ("001", "002") for r in ds.query)
    assert all(r.camid == 1 and base(r.path)[4:7] in ("003", "004") for r in ds.gallery)
    train_persons = {base(r.path)[:4] for r in ds.train}
    assert not train_persons & {f"{r.pid:04d}" for r in ds.query}
    assert any("Thumbs.db" in n for n in ds.notes)


def test_cuhk01_splits_are_seeded_and_distinct(cuhk01_root: Path) -> None:
    a = load_dataset("cuhk01", cuhk01_root, split=0)
    assert load_dataset("cuhk01", cuhk01_root, split=0).query == a.query
    b = load_dataset("cuhk01", cuhk01_root, split=1)
    assert {r.pid for r in a.query} != {r.pid for r in b.query}
    c = load_dataset("cuhk01", cuhk01_root, split=0, seed=1)
    assert {r.pid for r in a.query} != {r.pid for r in c.query}
    with pytest.raises(ValueError, match="0..9"):
        load_dataset("cuhk01", cuhk01_root, split=10)
    with pytest.raises(ValueError, match="between 1 and 970"):
        load_dataset("cuhk01", cuhk01_root, test_ids=971)


def test_cuhk01_layout_error(tmp_path: Path) -> None:
    (tmp_path / "campus").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images") as info:
        load_dataset("cuhk01", tmp_path)
    assert "0001001.png" in str(info.value) and "ACCV 2012" in str(info.value)


# ---- VIPeR -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def viper_root(scratch: Path) -> Path:
    root = scratch / "viper" / "VIPeR"
    pids = sorted(np.random.default_rng(0).choice(874, size=632, replace=False).tolist())
    touch_all(root / "cam_a", [f"{p:03d}_{(p * 45) % 360}.bmp" for p in pids])
    touch_all(root / "cam_b", [f"{p:03d}_{(p * 90) % 360}.bmp" for p in pids])
    return root


def test_viper_protocol(viper_root: Path) -> None:
    for root in (viper_root, viper_root.parent):
        ds = load_dataset("viper", root, split=9)
        assert (ds.split, ds.num_splits) == (9, 10)
        assert ds.num_train_pids == 316 and len(ds.train) == 632
        assert Counter(r.camid for r in ds.train) == {0: 316, 1: 316}
        assert len(ds.query) == len(ds.gallery) == 316
        assert all("cam_a" in r.path and r.camid == 0 for r in ds.query)
        assert all("cam_b" in r.path and r.camid == 1 for r in ds.gallery)
        assert [r.pid for r in ds.query] == [r.pid for r in ds.gallery]
        assert all(base(r.path).startswith(f"{r.pid:03d}_") for r in ds.query + ds.gallery)
        train_persons = {int(base(r.path)[:3]) for r in ds.train}
        assert len(train_persons) == 316 and not train_persons & {r.pid for r in ds.query}


def test_viper_unpaired_images_are_left_out(tmp_path: Path) -> None:
    touch_all(tmp_path / "cam_a", ["000_45.bmp", "001_0.bmp", "007_90.bmp", "readme.txt"])
    touch_all(tmp_path / "cam_b", ["000_90.bmp", "001_180.bmp"])
    ds = load_dataset("viper", tmp_path)
    assert len(ds.train) == 2 and len(ds.query) == 1
    assert any("left out 1 image" in n for n in ds.notes)
    assert any("readme.txt" in n for n in ds.notes)


def test_viper_layout_error(tmp_path: Path) -> None:
    (tmp_path / "cam_a").mkdir()
    with pytest.raises(DatasetLayoutError, match="cam_b") as info:
        load_dataset("viper", tmp_path)
    assert "000_45.bmp" in str(info.value) and "VIPeR" in str(info.value)


# ---- QMUL i-LIDS -------------------------------------------------------------------------

def ilids_names() -> list[str]:
    counts = [2 + (pid * 7) % 5 for pid in range(1, 120)]  # 2..6 images per person
    counts[-1] += 476 - sum(counts)
    assert sum(counts) == 476 and min(counts) >= 2
    return [f"{pid:04d}{i:03d}.jpg" for pid, n in enumerate(counts, 1) for i in range(1, n + 1)]


@pytest.mark.parametrize("layout", ["images", "i-LIDS_Pedestrian/Persons"])
def test_ilids_protocol(tmp_path: Path, layout: str) -> None:
    names = ilids_names()
    touch_all(tmp_path / layout, names)
    per_person = Counter(n[:4] for n in names)
    ds = load_dataset("QMUL-iLIDS", tmp_path, split=4)
    assert (ds.split, ds.num_splits) == (4, 10)
    # MTDnet's recorded split: val_ratio 0.5 of 119 ids -> 59 test, 60 train (BuildData_iLIDS.py)
    assert ds.num_train_pids == 60
    assert len(ds.query) == len(ds.gallery) == 59
    test_pids = [r.pid for r in ds.query]
    assert test_pids == [r.pid for r in ds.gallery] and len(set(test_pids)) == 59
    assert len(ds.train) == 476 - sum(per_person[f"{p:04d}"] for p in test_pids)
    assert all(q.path != g.path for q, g in zip(ds.query, ds.gallery, strict=True))
    assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
    # training camids alternate 0/1 in file order within each person
    first = [r for r in ds.train if r.pid == 0]
    assert [r.camid for r in first] == [i % 2 for i in range(len(first))]


def test_ilids_layout_error(tmp_path: Path) -> None:
    touch_all(tmp_path / "images", ["Thumbs.db"])
    with pytest.raises(DatasetLayoutError, match="0001001.jpg") as info:
        load_dataset("ilids", tmp_path)
    assert "BMVC 2009" in str(info.value)


# ---- PRID2011 ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prid_root(scratch: Path) -> Path:
    root = scratch / "prid" / "prid_2011" / "single_shot"
    touch_all(root / "cam_a", [f"person_{p:04d}.png" for p in range(1, 386)])
    touch_all(root / "cam_b", [f"person_{p:04d}.png" for p in range(1, 750)])
    return root.parent.parent


def test_prid2011_protocol(prid_root: Path) -> None:
    ds = load_dataset("prid2011", prid_root, split=5)
    assert (ds.split, ds.num_splits) == (5, 10)
    assert ds.num_train_pids == 100 and len(ds.train) == 200
    assert len(ds.query) == 100 and len(ds.gallery) == 649
    query_pids = {r.pid for r in ds.query}
    assert query_pids <= set(range(1, 201))
    assert {r.pid for r in ds.gallery} == query_pids | set(range(201, 750))
    assert all("cam_a" in r.path and r.camid == 0 for r in ds.query)
    assert all("cam_b" in r.path and r.camid == 1 for r in ds.gallery)
    train_persons = {base(r.path) for r in ds.train}
    assert len(train_persons) == 100
    assert all(int(name[7:11]) <= 200 for name in train_persons)  # 201+ differ across cameras
    assert not train_persons & {base(r.path) for r in ds.query}
    assert load_dataset("prid", prid_root / "prid_2011" / "single_shot", split=5).query == ds.query


def test_prid2011_layout_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="person_0001.png") as info:
        load_dataset("prid2011", tmp_path)
    assert "single_shot" in str(info.value) and "Graz" in str(info.value)


# ---- the shared single-shot split ----------------------------------------------------------

def test_single_shot_split_against_reference() -> None:
    # 30 identities with 1..3 images; those with one image cannot be tested, only trained on
    by_pid = {p: [ImageRecord(f"{p}/{i}.jpg", p, i % 2) for i in range(1 + p % 3)]
              for p in range(10, 40)}
    candidates = [p for p, images in by_pid.items() if len(images) >= 2]

    def pick(images: Sequence[ImageRecord], rng: np.random.Generator) -> tuple[ImageRecord, ImageRecord]:
        q, g = rng.choice(len(images), size=2, replace=False).tolist()
        return images[q], images[g]

    train, query, gallery = single_shot_split(
        by_pid, 5, split=3, seed=7, dataset="toy", candidates=candidates, pick=pick
    )
    # reference: the split's generator draws the test ids from the sorted candidates, then the
    # picks in ascending test id order
    rng = np.random.default_rng([7, 3])
    test = sorted(rng.choice(sorted(candidates), size=5, replace=False).tolist())
    expected = [pick(by_pid[p], rng) for p in test]
    assert query == [q for q, _ in expected] and gallery == [g for _, g in expected]
    assert [r.pid for r in query] == test
    assert train == [r for p in sorted(by_pid) if p not in test for r in by_pid[p]]
    assert {p for p in by_pid if len(by_pid[p]) == 1} <= {r.pid for r in train}

    # the default pick takes the first image as query and the second as gallery, drawing nothing
    _, query, gallery = single_shot_split(by_pid, 5, split=3, seed=7, dataset="toy",
                                          candidates=candidates)
    assert [(q.path, g.path) for q, g in zip(query, gallery, strict=True)] == [
        (f"{p}/0.jpg", f"{p}/1.jpg") for p in test
    ]
    with pytest.raises(ValueError, match="toy: cannot hold out 20 of 20 .* between 1 and 19"):
        single_shot_split(by_pid, 20, split=0, seed=0, dataset="toy", candidates=candidates)
