"""MSMT17 V1/V2 list parsing against the official counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from reidkit.data import ImageRecord, load_dataset
from reidkit.data.datasets import DatasetLayoutError

LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")


def lines_for(num_images: int, pids: list[int], start: int = 0) -> list[str]:
    """``num_images`` list lines spread over ``pids`` and the 15 cameras."""
    base, extra = divmod(num_images, len(pids))
    out = []
    for i, pid in enumerate(pids):
        for j in range(base + (i < extra)):
            cam = 1 + (i + j) % 15
            out.append(f"{pid:04d}/{pid:04d}_{start + j:03d}_{cam:02d}_0303morning_{j:04d}_0.jpg"
                       f" {pid}")
    return out


def write_msmt(base: Path, train_dir: str, test_dir: str) -> None:
    (base / train_dir).mkdir(parents=True)
    (base / test_dir).mkdir()
    contents = {
        "list_train.txt": lines_for(30_248, list(range(1_041))),
        # list_val holds further images of training identities
        "list_val.txt": lines_for(2_373, list(range(0, 1_041, 3)), start=500),
        "list_query.txt": lines_for(11_659, list(range(3_060))),
        "list_gallery.txt": lines_for(82_161, list(range(3_060)), start=100),
    }
    for name, lines in contents.items():
        (base / name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def msmt_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("msmt")
    write_msmt(parent / "MSMT17_V1", "train", "test")
    return parent


def test_official_counts(msmt_parent: Path) -> None:
    ds = load_dataset("msmt17", msmt_parent)
    assert len(ds.train) == 32_621
    assert ds.num_train_pids == 1_041 and sorted({r.pid for r in ds.train}) == list(range(1_041))
    assert ds.num_train_cams == 15
    assert len(ds.query) == 11_659 and len(ds.gallery) == 82_161
    assert {r.camid for r in ds.query + ds.gallery} == set(range(15))
    assert len({r.pid for r in ds.gallery}) == 3_060
    assert len(ds.val) == 2_373
    assert ds.train[0].path.startswith(str(msmt_parent / "MSMT17_V1" / "train"))
    assert ds.query[0].path.startswith(str(msmt_parent / "MSMT17_V1" / "test"))
    assert any("V1" in n for n in ds.notes)


def test_val_kept_apart(msmt_parent: Path) -> None:
    ds = load_dataset("msmt17", msmt_parent / "MSMT17_V1", val_as_train=False)
    assert len(ds.train) == 30_248 and ds.num_train_pids == 1_041
    assert len(ds.val) == 2_373
    train_paths = {r.path for r in ds.train}
    assert not any(r.path in train_paths for r in ds.val)
    # val labels are the training labels of the same identities (here pid == label)
    for r in ds.val[:50]:
        assert r.pid == int(Path(r.path).name[:4])


def test_first_line_fields(msmt_parent: Path) -> None:
    ds = load_dataset("msmt17", msmt_parent, val_as_train=False)
    base = msmt_parent / "MSMT17_V1"
    assert ds.train[0] == ImageRecord(
        str(base / "train" / "0000/0000_000_01_0303morning_0000_0.jpg"), 0, 0
    )
    counts = Counter(r.camid for r in ds.query)
    assert min(counts) == 0 and max(counts) == 14


def test_relabel_with_gaps(tmp_path: Path) -> None:
    base = tmp_path / "MSMT17_V2"
    (base / "mask_train_v2").mkdir(parents=True)
    (base / "mask_test_v2").mkdir()
    (base / "list_train.txt").write_text(
        "0007/0007_000_03_0303morning_0001_0.jpg 7\n"
        "0002/0002_000_15_0303noon_0001_0.jpg 2\n"
        "\n"
        "garbage line with words\n"
        "0002/0002_bad.jpg 2\n"
    )
    (base / "list_val.txt").write_text("0007/0007_001_04_0303morning_0002_0.jpg 7\n")
    (base / "list_query.txt").write_text("0011/0011_000_02_0303morning_0001_0.jpg 11\n")
    (base / "list_gallery.txt").write_text("0011/0011_001_09_0303morning_0001_0.jpg 11\n")
    ds = load_dataset("msmt17", tmp_path, version="v2")
    train_dir = base / "mask_train_v2"
    assert ds.train == [
        ImageRecord(str(train_dir / "0007/0007_000_03_0303morning_0001_0.jpg"), 1, 2),
        ImageRecord(str(train_dir / "0002/0002_000_15_0303noon_0001_0.jpg"), 0, 14),
        ImageRecord(str(train_dir / "0007/0007_001_04_0303morning_0002_0.jpg"), 1, 3),
    ]
    assert ds.val == [ds.train[2]]
    assert ds.query == [ImageRecord(
        str(base / "mask_test_v2" / "0011/0011_000_02_0303morning_0001_0.jpg"), 11, 1)]
    assert ds.gallery[0].camid == 8
    assert any("skipped 2 line(s) of list_train.txt" in n for n in ds.notes)
    assert any("V2" in n for n in ds.notes)


def test_missing_list_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for name in LISTS[:3]:
        (tmp_path / name).write_text("")
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset("msmt17", tmp_path)
    msg = str(info.value)
    assert "list_gallery.txt" in msg and "mask_train_v2/" in msg and "Wei et al." in msg


def test_version_checks(msmt_parent: Path) -> None:
    with pytest.raises(ValueError, match="'v1' or 'v2'"):
        load_dataset("msmt17", msmt_parent, version="v3")
    with pytest.raises(DatasetLayoutError):
        load_dataset("msmt17", msmt_parent, version="v2")  # only V1 is there
    assert len(load_dataset("msmt17", msmt_parent, version=1).query) == 11_659
