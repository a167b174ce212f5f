"""The ``folder`` loader for users' own data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reidkit.data import ImageRecord, load_dataset
from reidkit.data.dataset import Sighting
from reidkit.data.datasets import DatasetLayoutError
from reidkit.data.sidecar import SIDECAR, sighting_row, write_rows


def touch(root: Path, *rel: str) -> None:
    for r in rel:
        (root / r).parent.mkdir(parents=True, exist_ok=True)
        (root / r).touch()


def test_identity_folders_with_numeric_names_and_no_cameras(tmp_path: Path) -> None:
    touch(tmp_path, "train/0003/a.jpg", "train/0003/b.jpg", "train/0010/a.png",
          "query/0021/q.jpg", "gallery/0021/g1.jpg", "gallery/0021/g2.jpg", "gallery/0030/x.jpg",
          "gallery/Thumbs.db")
    ds = load_dataset("folder", tmp_path)
    t = str(tmp_path)
    # the folder names are the identities' own names (shown to people); no camera names
    assert ds.train == [ImageRecord(f"{t}/train/0003/a.jpg", 0, 0, None, "0003"),
                        ImageRecord(f"{t}/train/0003/b.jpg", 0, 0, None, "0003"),
                        ImageRecord(f"{t}/train/0010/a.png", 1, 0, None, "0010")]
    # no cameras: every gallery image is a camera of its own, and queries after them
    assert ds.gallery == [ImageRecord(f"{t}/gallery/0021/g1.jpg", 21, 0, None, "0021"),
                          ImageRecord(f"{t}/gallery/0021/g2.jpg", 21, 1, None, "0021"),
                          ImageRecord(f"{t}/gallery/0030/x.jpg", 30, 2, None, "0030")]
    assert ds.query == [ImageRecord(f"{t}/query/0021/q.jpg", 21, 3, None, "0021")]
    assert any("own camera" in n for n in ds.notes)
    assert any("get camid 0" in n for n in ds.notes)
    assert any("Thumbs.db" in n for n in ds.notes)


def test_junk_identity_folder_is_dropped(tmp_path: Path) -> None:
    touch(tmp_path, "gallery/-1/a.jpg", "gallery/zoe/b.jpg", "query/zoe/c.jpg")
    ds = load_dataset("folder", tmp_path)
    assert [r.pid for r in ds.gallery] == [r.pid for r in ds.query] == [0]
    assert any("dropped 1 junk" in n for n in ds.notes)


def test_named_identities_share_pids_between_query_and_gallery(tmp_path: Path) -> None:
    touch(tmp_path, "query/bob/1.jpg", "query/alice/1.jpg", "gallery/alice/2.jpg",
          "gallery/bob/2.jpg", "gallery/carol/1.jpg")
    ds = load_dataset("folder", tmp_path)
    q = {Path(r.path).parent.name: r.pid for r in ds.query}
    g = {Path(r.path).parent.name: r.pid for r in ds.gallery}
    assert q == {"alice": 0, "bob": 1} and g == {"alice": 0, "bob": 1, "carol": 2}
    assert ds.train == []


def test_market_style_names_with_cameras(tmp_path: Path) -> None:
    touch(tmp_path, "bounding_box_train/0002_c1s1_000451_03.jpg", "bounding_box_train/0009_c3.jpg",
          "query/0005_c2_x.jpg", "bounding_box_test/0005_c4_y.jpg",
          "bounding_box_test/-1_c1_junk.jpg", "bounding_box_test/noid.jpg")
    ds = load_dataset("folder", tmp_path)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 2)]
    assert [(r.pid, r.camid) for r in ds.query] == [(5, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(5, 3)]
    assert any("1 junk" in n for n in ds.notes)
    assert any("skipped 1 gallery image" in n for n in ds.notes)
    assert not any("own camera" in n for n in ds.notes)


def test_zero_based_cameras_are_kept(tmp_path: Path) -> None:
    touch(tmp_path, "query/1_c0.jpg", "gallery/1_c1.jpg")
    ds = load_dataset("folder", tmp_path)
    assert (ds.query[0].camid, ds.gallery[0].camid) == (0, 1)


def test_gallery_only_folder_for_search(tmp_path: Path) -> None:
    touch(tmp_path, "cctv_001.jpg", "cctv_002.png", "12_c2_person.jpg", "notes.txt")
    ds = load_dataset("folder", tmp_path)
    assert ds.train == [] and ds.query == []
    assert [(Path(r.path).name, r.pid) for r in ds.gallery] == [
        ("12_c2_person.jpg", 12), ("cctv_001.jpg", -1), ("cctv_002.png", -1)]
    assert sorted(r.camid for r in ds.gallery) == [0, 1, 2]
    assert any("2 gallery image(s) carry no identity" in n for n in ds.notes)
    assert any("notes.txt" in n for n in ds.notes)


def test_gallery_folder_without_query(tmp_path: Path) -> None:
    touch(tmp_path, "gallery/7/a.jpg", "gallery/8/b.jpg")
    ds = load_dataset("folder", tmp_path)
    assert [r.pid for r in ds.gallery] == [7, 8] and ds.query == []


def test_root_as_training_set(tmp_path: Path) -> None:
    touch(tmp_path, "ann/1_c1.jpg", "ann/2_c2.jpg", "ben/1_c1.jpg")
    ds = load_dataset("folder", tmp_path, subset="train")
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 1), (1, 0)]
    assert ds.gallery == []
    with pytest.raises(ValueError, match="'gallery' or 'train'"):
        load_dataset("folder", tmp_path, subset="query")


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="folder not found"):
        load_dataset("folder", tmp_path / "missing")
    touch(tmp_path, "query/1/a.jpg")
    with pytest.raises(DatasetLayoutError, match="without gallery"):
        load_dataset("folder", tmp_path)
    empty = tmp_path / "empty"
    touch(empty, "gallery/readme.md")
    with pytest.raises(DatasetLayoutError, match="no usable images") as info:
        load_dataset("folder", empty)
    assert "0002_c1s1_000451_03.jpg" in str(info.value)


def test_a_root_of_identity_folders_is_a_training_set(tmp_path: Path) -> None:
    touch(tmp_path, "ann/1.jpg", "ann/2.jpg", "ben/1.jpg", "cat/1.jpg")
    ds = load_dataset("folder", tmp_path)  # before: read as a gallery, nothing to train on
    assert [r.pid for r in ds.train] == [0, 0, 1, 2] and ds.gallery == [] and ds.query == []
    searched = load_dataset("folder", tmp_path, subset="gallery")  # what `extract --images` reads
    assert len(searched.gallery) == 4 and searched.train == []
    touch(tmp_path / "flat", "a.jpg", "b.jpg")
    assert len(load_dataset("folder", tmp_path / "flat").gallery) == 2  # loose images: a gallery


def test_test_ids_carve_query_and_gallery_from_identity_folders(tmp_path: Path) -> None:
    for person, n in (("ann", 3), ("ben", 2), ("cat", 2), ("dan", 1)):
        touch(tmp_path, *(f"{person}/{i}.jpg" for i in range(n)))
    ds = load_dataset("folder", tmp_path, test_ids=2, seed=0)
    held = {Path(r.path).parent.name for r in ds.query}
    assert len(held) == 2 and ds.num_train_pids == 2
    assert not held & {Path(r.path).parent.name for r in ds.train}
    # per identity the first image is its query, the rest its gallery
    assert all(Path(r.path).name == "0.jpg" for r in ds.query)
    assert {Path(r.path).parent.name for r in ds.gallery} <= held
    assert len(ds.query) + len(ds.gallery) + len(ds.train) == 8
    # no cameras: every test image is a camera of its own, so no match is removed
    cams = [r.camid for r in ds.gallery + ds.query]
    assert sorted(cams) == list(range(len(cams)))
    assert any("held out 2 training identities" in n for n in ds.notes)
    again = load_dataset("folder", tmp_path, test_ids=2, seed=0)
    assert again.query == ds.query and again.gallery == ds.gallery  # seeded


def test_test_ids_and_unknown_options_are_checked(tmp_path: Path) -> None:
    from reidkit.errors import ReidkitError

    touch(tmp_path, "ann/1.jpg", "ben/1.jpg")
    with pytest.raises(ReidkitError, match="test_ids=2 of 2 identities; choose 1..1"):
        load_dataset("folder", tmp_path, test_ids=2)
    with pytest.raises(ReidkitError, match="no option splits; its options: subset, test_ids, seed"):
        load_dataset("folder", tmp_path, splits=3)
    touch(tmp_path / "split", "query/1/a.jpg", "gallery/1/b.jpg")
    with pytest.raises(ReidkitError, match="already has query/gallery"):
        load_dataset("folder", tmp_path / "split", test_ids=1)


def test_folder_records_carry_names_and_sightings(tmp_path: Path) -> None:
    for name in ("gallery/alice/x_c6.jpg", "gallery/bob/y_c2.jpg"):
        (tmp_path / "names" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16)).save(tmp_path / "names" / name)
    records = load_dataset("folder", tmp_path / "names").gallery
    assert [(r.identity, r.camera, r.camid) for r in records] == [("alice", "6", 5), ("bob", "2", 1)]
    out = tmp_path / "ingest"
    (out / "gallery").mkdir(parents=True)
    Image.new("RGB", (8, 16)).save(out / "gallery" / "0003_c1s1_000012_00.jpg")
    sighting = Sighting("/v/cam.avi", "cam", 12, 1.2, (1, 2, 9, 18), 0.9, 3)
    with open(out / SIDECAR, "w") as fh:
        write_rows(fh, [sighting_row("gallery/0003_c1s1_000012_00.jpg", 1, sighting)], header=True)
    (record,) = load_dataset("folder", out).gallery
    assert (record.pid, record.camid, record.camera, record.identity) == (3, 0, "cam", "0003")
    assert record.sighting == Sighting("/v/cam.avi", "cam", 12, 1.2, (1, 2, 9, 18), 0.9, 3)
