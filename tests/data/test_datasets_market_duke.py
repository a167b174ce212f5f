"""Market-1501 and DukeMTMC-reID parsers on file trees with the official names and counts."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from reidkit.data import ImageRecord, load_dataset
from reidkit.data.datasets import DatasetLayoutError


def touch_all(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_WRONLY, 0o644))


def spread(num_images: int, pids: list[int], num_cams: int) -> list[tuple[int, int]]:
    """(pid, 1-based camera) for ``num_images`` images spread as evenly as possible over pids."""
    base, extra = divmod(num_images, len(pids))
    out = []
    for i, pid in enumerate(pids):
        out += [(pid, 1 + (i + j) % num_cams) for j in range(base + (i < extra))]
    return out


def market_names(items: list[tuple[int, int]]) -> list[str]:
    return [f"{'-1' if pid == -1 else f'{pid:04d}'}_c{cam}s1_{i:06d}_01.jpg"
            for i, (pid, cam) in enumerate(items)]


def duke_names(items: list[tuple[int, int]]) -> list[str]:
    return [f"{pid:04d}_c{cam}_f{i:07d}.jpg" for i, (pid, cam) in enumerate(items)]


# Official statistics (DESIGN.md): train ids / images, query images, gallery images, cameras.
MARKET_TRAIN_PIDS = list(range(2, 2 * 751 + 1, 2))  # 751 ids, even numbers as in the release
MARKET_TEST_PIDS = list(range(1, 2 * 750, 2))  # 750 query ids
DUKE_TRAIN_PIDS = list(range(1, 2 * 702, 2))  # 702 ids
DUKE_TEST_PIDS = list(range(2, 2 * 702 + 1, 2))  # 702 query ids
DUKE_DISTRACTOR_PIDS = list(range(5000, 5408))  # 408 gallery-only ids


@pytest.fixture(scope="module")
def market_parent(scratch: Path) -> Path:
    parent = scratch / "market"
    root = parent / "Market-1501-v15.09.15"
    touch_all(root / "bounding_box_train",
              market_names(spread(12_936, MARKET_TRAIN_PIDS, 6)) + ["Thumbs.db"])
    touch_all(root / "query", market_names(spread(3_368, MARKET_TEST_PIDS, 6)))
    gallery = (spread(13_115, MARKET_TEST_PIDS, 6) + spread(2_798, [0], 6)
               + spread(3_819, [-1], 6))
    assert len(gallery) == 19_732
    touch_all(root / "bounding_box_test", market_names(gallery))
    (root / "gt_bbox").mkdir()  # the release's hand-drawn boxes: not part of the protocol
    return parent


@pytest.fixture(scope="module")
def duke_root(scratch: Path) -> Path:
    root = scratch / "duke" / "DukeMTMC-reID"
    touch_all(root / "bounding_box_train", duke_names(spread(16_522, DUKE_TRAIN_PIDS, 8)))
    touch_all(root / "query", duke_names(spread(2_228, DUKE_TEST_PIDS, 8)))
    touch_all(root / "bounding_box_test",
              duke_names(spread(17_661, DUKE_TEST_PIDS + DUKE_DISTRACTOR_PIDS, 8)))
    return root


@pytest.mark.parametrize("inner", [True, False], ids=["folder", "parent"])
def test_market1501_official_counts(market_parent: Path, inner: bool) -> None:
    root = market_parent / "Market-1501-v15.09.15" if inner else market_parent
    ds = load_dataset("market1501", root)
    assert ds.name == "market1501"
    assert len(ds.train) == 12_936
    assert ds.num_train_pids == 751
    assert sorted({r.pid for r in ds.train}) == list(range(751))
    assert ds.num_train_cams == 6
    assert len(ds.query) == 3_368
    assert {r.pid for r in ds.query} == set(MARKET_TEST_PIDS)  # original ids kept
    assert len(ds.gallery) == 15_913
    gallery_pids = Counter(r.pid for r in ds.gallery)
    assert gallery_pids[0] == 2_798 and -1 not in gallery_pids
    assert {r.camid for r in ds.query + ds.gallery} == set(range(6))
    assert any("3819 junk" in n for n in ds.notes)
    assert any("Thumbs.db" in n and "skipped 1 file" in n for n in ds.notes)
    assert ds.num_splits == 1


def test_market1501_train_relabel_follows_sorted_pids(market_parent: Path) -> None:
    ds = load_dataset("Market-1501", market_parent)
    for r in ds.train[:200]:
        original = int(os.path.basename(r.path)[:4])
        assert r.pid == MARKET_TRAIN_PIDS.index(original)
        assert r.camid == int(os.path.basename(r.path)[6]) - 1


def test_duke_official_counts(duke_root: Path) -> None:
    for root in (duke_root, duke_root.parent):
        ds = load_dataset("DukeMTMC-reID", root)
        assert ds.name == "dukemtmcreid"
        assert (len(ds.train), ds.num_train_pids, ds.num_train_cams) == (16_522, 702, 8)
        assert len(ds.query) == 2_228 and len({r.pid for r in ds.query}) == 702
        assert len(ds.gallery) == 17_661 and len({r.pid for r in ds.gallery}) == 1_110
        assert {r.camid for r in ds.gallery} == set(range(8))
        assert ds.notes == []


def test_duke_alias(duke_root: Path) -> None:
    assert len(load_dataset("duke", duke_root).train) == 16_522


def test_market_records_exact(tmp_path: Path) -> None:
    touch_all(tmp_path / "bounding_box_train",
              ["0007_c3s2_000100_01.jpg", "0002_c1s1_000451_03.jpg", "0002_c2s1_000500_01.jpg"])
    touch_all(tmp_path / "query", ["0005_c1s1_000001_00.jpg"])
    touch_all(tmp_path / "bounding_box_test",
              ["0005_c4s1_000002_00.jpg", "0000_c6s1_000002_00.jpg", "-1_c2s1_000001_00.jpg",
               "desktop.ini", ".DS_Store"])
    ds = load_dataset("market1501", tmp_path)
    t = str(tmp_path)
    assert ds.train == [
        ImageRecord(f"{t}/bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0),
        ImageRecord(f"{t}/bounding_box_train/0002_c2s1_000500_01.jpg", 0, 1),
        ImageRecord(f"{t}/bounding_box_train/0007_c3s2_000100_01.jpg", 1, 2),
    ]
    assert ds.query == [ImageRecord(f"{t}/query/0005_c1s1_000001_00.jpg", 5, 0)]
    assert ds.gallery == [
        ImageRecord(f"{t}/bounding_box_test/0000_c6s1_000002_00.jpg", 0, 5),
        ImageRecord(f"{t}/bounding_box_test/0005_c4s1_000002_00.jpg", 5, 3),
    ]
    assert any("skipped 2 file(s) in bounding_box_test/" in n for n in ds.notes)


def test_market_distractors_leave_training_set(tmp_path: Path) -> None:
    touch_all(tmp_path / "bounding_box_train", ["0000_c1s1_000001_00.jpg", "0003_c1s1_1_01.jpg"])
    touch_all(tmp_path / "query", [])
    touch_all(tmp_path / "bounding_box_test", [])
    ds = load_dataset("market1501", tmp_path)
    assert [r.pid for r in ds.train] == [0] and ds.train[0].path.endswith("0003_c1s1_1_01.jpg")
    assert any("1 distractor" in n for n in ds.notes)


def test_missing_folder_names_layout_and_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset("market1501", tmp_path / "nope")
    msg = str(info.value)
    assert "folder not found" in msg
    assert "bounding_box_train/" in msg and "0002_c1s1_000451_03.jpg" in msg
    assert "Market-1501" in msg and "Zheng" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_layout_names_missing_folder(tmp_path: Path) -> None:
    touch_all(tmp_path / "bounding_box_train", ["0005_c2_f0046985.jpg"])
    touch_all(tmp_path / "bounding_box_test", [])
    with pytest.raises(DatasetLayoutError, match=r"missing \S*/query/") as info:
        load_dataset("dukemtmcreid", tmp_path)
    assert "0005_c2_f0046985.jpg" in str(info.value) and "DukeMTMC-reID" in str(info.value)


def test_partial_layout_inside_parent_is_reported(tmp_path: Path) -> None:
    inner = tmp_path / "Market-1501-v15.09.15"
    touch_all(inner / "bounding_box_train", [])
    touch_all(inner / "query", [])
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset("market1501", tmp_path)
    assert f"missing {inner / 'bounding_box_test'}/" in str(info.value)


def test_market_names_in_duke_folder_are_strays(tmp_path: Path) -> None:
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        touch_all(tmp_path / sub, ["0002_c1s1_000451_03.jpg", "0005_c2_f0046985.jpg"])
    ds = load_dataset("duke", tmp_path)
    assert len(ds.train) == len(ds.query) == len(ds.gallery) == 1
    assert sum("0002_c1s1_000451_03.jpg" in n for n in ds.notes) == 3


def small_market(root: Path) -> None:
    touch_all(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg"])
    touch_all(root / "query", ["0001_c1s1_001051_00.jpg"])
    touch_all(root / "bounding_box_test", ["0001_c2s1_000301_01.jpg", "0000_c3s1_000401_02.jpg",
                                           "-1_c1s1_000001_00.jpg"])


def test_market_500k_distractors_join_the_gallery_as_pid_0(tmp_path: Path) -> None:
    root = tmp_path / "Market-1501-v15.09.15"
    small_market(root)
    # The release's names are not relied on: Market-style names (any leading number), names
    # without a camera, other suffixes and sub-folders; hidden files and non-images are skipped.
    extra = tmp_path / "distractors_500k"
    touch_all(extra, ["0000_c1s0_000000_00.jpg", "0017_c6s0_123456_07.jpg", "000002.JPG",
                      ".DS_Store", "readme.txt"])
    touch_all(extra / "part2", ["00000003_c4.png"])
    ds = load_dataset("market1501", tmp_path, distractors=extra)
    base = len(load_dataset("market1501", tmp_path).gallery)
    added = ds.gallery[base:]
    assert base == 2 and len(added) == 4
    assert [(Path(r.path).name, r.pid, r.camid) for r in added] == [
        ("000002.JPG", 0, -1), ("0000_c1s0_000000_00.jpg", 0, 0),
        ("0017_c6s0_123456_07.jpg", 0, 5), ("00000003_c4.png", 0, 3)]
    assert any("added 4 distractor" in n for n in ds.notes)
    assert len(ds.query) == 1 and ds.num_train_pids == 1


def test_market_500k_default_folder_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "Market-1501-v15.09.15"
    small_market(root)
    with pytest.raises(FileNotFoundError, match="distractors_500k.zip"):
        load_dataset("market1501", tmp_path, distractors=True)
    touch_all(root / "images", ["notes.txt"])
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset("market1501", tmp_path, distractors=True)
    touch_all(root / "images", ["0000_c2s0_000010_00.jpg"])
    ds = load_dataset("market1501", tmp_path, distractors=True)
    assert [(r.pid, r.camid) for r in ds.gallery[-1:]] == [(0, 1)]


def test_distractors_are_never_matches_in_evaluation(tmp_path: Path) -> None:
    import numpy as np

    from reidkit.evaluation import evaluate_features

    root = tmp_path / "Market-1501-v15.09.15"
    small_market(root)
    touch_all(tmp_path / "d", ["0001_c2s0_000001_00.jpg"])  # named like the query's identity
    ds = load_dataset("market1501", tmp_path, distractors=tmp_path / "d")
    pids, cams = [r.pid for r in ds.gallery], [r.camid for r in ds.gallery]
    # Gallery: the old distractor at distance 3, the true match at 2, the 500k one at 0.
    gf = np.array([[3.0], [2.0], [0.0]], dtype=np.float32)
    res = evaluate_features(np.zeros((1, 1), np.float32), gf, [1], pids, [0], cams, max_rank=3)
    assert pids == [0, 1, 0]
    np.testing.assert_allclose(res.cmc, [0, 1, 1])
    assert res.mAP == 0.5
