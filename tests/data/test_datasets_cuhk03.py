"""CUHK03: the official .mat structures (v7.3 HDF5 and v5), extraction, both protocols, counts."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from reidkit.data import load_dataset
from reidkit.data.datasets import DatasetLayoutError
from reidkit.data.datasets.cuhk03 import camid_of

PAIR_SIZES_FULL = (843, 440, 77, 58, 49)  # persons per camera pair in cuhk-03.mat (1,467)


class MatWriter:
    """Writes datasets the way MATLAB v7.3 does: referenced arrays under '#refs#', transposed."""

    def __init__(self, f: h5py.File) -> None:
        self.f = f
        self.n = 0

    def put(self, data: np.ndarray) -> h5py.Reference:
        self.n += 1
        return self.f.create_dataset(f"#refs#/{self.n}", data=data).ref

    def put_matrix(self, matlab: np.ndarray) -> h5py.Reference:
        return self.put(np.asarray(matlab).T)

    def put_empty(self) -> h5py.Reference:
        self.n += 1
        ds = self.f.create_dataset(f"#refs#/{self.n}", data=np.zeros(2, dtype=np.uint64))
        ds.attrs["MATLAB_empty"] = np.uint8(1)
        return ds.ref

    def cell_row(self, name: str, refs: list[h5py.Reference]) -> None:
        arr = np.empty((len(refs), 1), dtype=h5py.ref_dtype)  # MATLAB 1 x n, transposed
        arr[:, 0] = refs
        self.f.create_dataset(name, data=arr)


def image_for(pair: int, person: int, k: int) -> np.ndarray:
    """A distinct, non-symmetric 5 x 3 RGB image (H x W x 3, as MATLAB holds it)."""
    rng = np.random.default_rng([pair, person, k])
    return rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)


def write_cuhk03_mat(
    path: Path,
    pair_sizes: tuple[int, ...],
    present: dict[str, set[tuple[int, int, int]]],
    testsets: list[list[tuple[int, int]]],
) -> None:
    """``present[variant]`` lists the (pair, person, image k 1..10) cells that hold an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        w = MatWriter(f)
        for variant in ("labeled", "detected"):
            pair_refs = []
            for pair, size in enumerate(pair_sizes, start=1):
                cells = np.empty((size, 10), dtype=object)  # MATLAB persons x 10 cell array
                for person in range(1, size + 1):
                    for k in range(1, 11):
                        cells[person - 1, k - 1] = (
                            w.put_matrix(image_for(pair, person, k))
                            if (pair, person, k) in present[variant] else w.put_empty()
                        )
                stored = np.empty((10, size), dtype=h5py.ref_dtype)
                stored[...] = cells.T
                pair_refs.append(w.put(stored))
            w.cell_row(variant, pair_refs)
        w.cell_row("testsets", [w.put_matrix(np.array(t, dtype=np.float64)) for t in testsets])


def file_name(pair: int, person: int, k: int) -> str:
    return f"{pair}_{person:03d}_{1 if k <= 5 else 2}_{k:02d}.png"


def write_config(path: Path, names: list[str], labels: list[int], train: list[int],
                 query: list[int], gallery: list[int], as_cell: bool = True) -> None:
    """A v5 config like cuhk03_new_protocol_config_*.mat (1-based index columns)."""
    cams = [int(n.split("_")[2]) for n in names]
    column = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    scipy.io.savemat(path, {
        "filelist": np.array(names, dtype=object if as_cell else str).reshape(-1, 1),
        "labels": column(labels),
        "camId": column(cams),
        "train_idx": column(np.asarray(train) + 1),
        "query_idx": column(np.asarray(query) + 1),
        "gallery_idx": column(np.asarray(gallery) + 1),
    })


# ---- a small release with the official structure ----------------------------------------

SMALL_SIZES = (4, 3, 3, 2, 2)
SMALL_TESTSETS = [[(1, 1 + s % 4), (2, 1 + s % 3), (3, 2)] for s in range(20)]


def small_present() -> dict[str, set[tuple[int, int, int]]]:
    full = {(p, q, k) for p, n in enumerate(SMALL_SIZES, 1) for q in range(1, n + 1)
            for k in range(1, 11)}
    # labeled: persons have 10, 9 or 8 images; detected: pair 2 person 3 has view 1 only
    labeled = full - {(1, 1, 10), (2, 2, 4), (2, 2, 9)}
    detected = full - {(2, 3, k) for k in range(6, 11)} - {(5, 2, 1)}
    return {"labeled": labeled, "detected": detected}


@pytest.fixture()
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "cuhk03"
    present = small_present()
    write_cuhk03_mat(root / "cuhk03_release" / "cuhk-03.mat", SMALL_SIZES, present,
                     SMALL_TESTSETS)
    offsets = np.cumsum((0,) + SMALL_SIZES)
    for variant in ("labeled", "detected"):
        cells = sorted(present[variant])
        names = [file_name(*c) for c in cells]
        labels = [int(offsets[p - 1]) + q for p, q, _ in cells]  # global ids 1..14
        test_ids = {2, 6, 13}
        train = [i for i, lab in enumerate(labels) if lab not in test_ids]
        query, gallery = [], []
        for i, (_, _, k) in enumerate(cells):
            if labels[i] in test_ids:
                (query if k in (1, 6) else gallery).append(i)
        write_config(root / f"cuhk03_new_protocol_config_{variant}.mat", names, labels, train,
                     query, gallery)
    return root


def test_extraction_writes_pngs_once(small_root: Path) -> None:
    ds = load_dataset("cuhk03", small_root.parent, variant="labeled")
    folder = small_root / "images_labeled"
    names = sorted(os.listdir(folder))
    assert len(names) == 140 - 3
    assert "1_001_1_01.png" in names and "1_001_2_10.png" not in names
    assert any("extracted 137 labeled images" in n for n in ds.notes)
    # pixels round-trip exactly, with MATLAB's H x W x 3 orientation
    with Image.open(folder / "2_003_2_07.png") as img:
        np.testing.assert_array_equal(np.asarray(img), image_for(2, 3, 7))
    # later loads read the folder: the .mat is no longer needed for the new protocol
    (small_root / "cuhk03_release" / "cuhk-03.mat").unlink()
    again = load_dataset("cuhk03", small_root, variant="labeled")
    assert again.train == ds.train and not any("extracted" in n for n in again.notes)
    assert not [p for p in small_root.iterdir() if p.name.startswith(".images")]


def test_new_protocol_records(small_root: Path) -> None:
    ds = load_dataset("cuhk03", small_root, variant="detected")
    assert ds.name == "cuhk03_detected"
    assert ds.num_train_pids == 11 and len(ds.train) == 140 - 6 - 3 * 10
    assert {r.pid for r in ds.query} == {2, 6, 13}
    # ids 2, 6, 13 are (pair 1, person 2), (2, 2), (5, 1): images 01 and 06 are the queries
    assert sorted(os.path.basename(r.path) for r in ds.query) == [
        "1_002_1_01.png", "1_002_2_06.png", "2_002_1_01.png", "2_002_2_06.png",
        "5_001_1_01.png", "5_001_2_06.png"]
    assert len(ds.gallery) == 30 - 6
    by_name = {os.path.basename(r.path): r for r in ds.query + ds.gallery}
    assert by_name["1_002_1_01.png"].camid == 0 and by_name["1_002_2_06.png"].camid == 1
    assert by_name["2_002_2_06.png"].camid == 3 and by_name["2_002_1_01.png"].camid == 2
    assert by_name["5_001_1_03.png"].camid == 8 and by_name["5_001_2_09.png"].camid == 9
    assert by_name["5_001_1_03.png"].pid == 13  # query/gallery keep the config's labels
    # different camera pairs never share a camera id
    pairs_of_cam: dict[int, set[int]] = {}
    for r in ds.train + ds.query + ds.gallery:
        pairs_of_cam.setdefault(r.camid, set()).add(int(os.path.basename(r.path)[0]))
    assert all(len(p) == 1 for p in pairs_of_cam.values())
    assert ds.num_train_cams == 10


def test_camid_formula() -> None:
    assert [camid_of(p, v) for p in range(1, 6) for v in (1, 2)] == list(range(10))


def test_classic_protocol(small_root: Path) -> None:
    ds = load_dataset("cuhk03", small_root, protocol="classic", split=3, val_ids=2)
    assert (ds.split, ds.num_splits) == (3, 20)
    test = {(1, 4), (2, 1), (3, 2)}  # SMALL_TESTSETS[3]
    assert {r.pid for r in ds.query} == {1000 * p + q for p, q in test}
    assert all(r.camid % 2 == 0 for r in ds.query) and all(r.camid % 2 == 1 for r in ds.gallery)
    assert {r.pid for r in ds.gallery} == {r.pid for r in ds.query}
    val_pids = {r.pid for r in ds.val}
    assert len(val_pids) == 2
    train_ids = {os.path.basename(r.path)[:5] for r in ds.train}
    val_ids = {f"{p // 1000}_{p % 1000:03d}" for p in val_pids}
    test_ids = {f"{p}_{q:03d}" for p, q in test}
    # pairs 1-3 hold 10 persons: 3 test, 2 validation, 5 training; pairs 4-5 are not used
    assert len(train_ids) == ds.num_train_pids == 5
    assert not (train_ids & val_ids) and not (train_ids & test_ids) and not (val_ids & test_ids)
    assert all(i[0] in "123" for i in train_ids | val_ids)
    other = load_dataset("cuhk03", small_root, protocol="classic", split=3, val_ids=2)
    assert other.train == ds.train and other.val == ds.val
    with pytest.raises(ValueError, match="0..19"):
        load_dataset("cuhk03", small_root, protocol="classic", split=20)


def test_detected_extraction_skips_empty_cells(small_root: Path) -> None:
    load_dataset("cuhk03", small_root, variant="detected")
    names = set(os.listdir(small_root / "images_detected"))
    assert len(names) == 140 - 6
    assert "2_003_1_05.png" in names and "2_003_2_06.png" not in names
    assert "5_002_1_01.png" not in names


def test_bad_options(small_root: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        load_dataset("cuhk03", small_root, variant="hand")
    with pytest.raises(ValueError, match="protocol"):
        load_dataset("cuhk03", small_root, protocol="old")


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset("cuhk03", tmp_path)
    msg = str(info.value)
    assert "cuhk-03.mat" in msg and "cuhk03_new_protocol_config_labeled.mat" in msg
    assert "DeepReID" in msg and "1_001_1_01.png" in msg
    (tmp_path / "cuhk03_new_protocol_config_labeled.mat").write_bytes(b"")
    with pytest.raises(ValueError, match="MATLAB v5 file of the CUHK03-NP release"):
        load_dataset("cuhk03", tmp_path)


def test_missing_extracted_images_are_reported(small_root: Path) -> None:
    load_dataset("cuhk03", small_root)
    (small_root / "images_labeled" / "1_003_1_02.png").unlink()
    with pytest.raises(DatasetLayoutError, match="1_003_1_02.png"):
        load_dataset("cuhk03", small_root)


def test_not_hdf5_mat(tmp_path: Path) -> None:
    (tmp_path / "cuhk03_release").mkdir()
    scipy.io.savemat(tmp_path / "cuhk03_release" / "cuhk-03.mat", {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="v7.3"):
        load_dataset("cuhk03", tmp_path, protocol="classic")


# ---- the official counts -----------------------------------------------------------------

NEW_PROTOCOL = {  # variant: (train images, query images, gallery images)
    "labeled": (7_368, 1_400, 5_328),
    "detected": (7_365, 1_400, 5_332),
}


@pytest.fixture(scope="module")
def full_root(scratch: Path) -> Path:
    """Configs with the official index counts, empty image files, the 20 classic test sets.

    Persons with one image fewer come first in each of train and test, so the detected images
    are a subset of the labeled ones in train and a superset in test: one folder holding the
    union serves both variants (images_detected links to it).
    """
    root = scratch / "cuhk03"
    persons = [(p, q) for p, n in enumerate(PAIR_SIZES_FULL, 1) for q in range(1, n + 1)]
    test = set(np.random.default_rng(0).choice(len(persons), size=700, replace=False).tolist())
    union: set[str] = set()
    for variant, (n_train, n_query, n_gallery) in NEW_PROTOCOL.items():
        short = {False: 767 * 10 - n_train, True: 700 * 10 - n_query - n_gallery}
        seen = {False: 0, True: 0}
        names, labels, subsets = [], [], {"train": [], "query": [], "gallery": []}
        for label, (p, q) in enumerate(persons, start=1):
            is_test = label - 1 in test
            drop = seen[is_test] < short[is_test]
            seen[is_test] += 1
            for k in range(1, 11 - drop):
                subset = ("query" if k in (1, 6) else "gallery") if is_test else "train"
                subsets[subset].append(len(names))
                names.append(file_name(p, q, k))
                labels.append(label)
        union.update(names)
        # filelist as a char matrix (loadmat gives strings) instead of the release's cell
        # array: the same values, and savemat writes it a hundred times faster
        root.mkdir(exist_ok=True)
        write_config(root / f"cuhk03_new_protocol_config_{variant}.mat", names, labels,
                     subsets["train"], subsets["query"], subsets["gallery"], as_cell=False)
    folder = root / "images_labeled"
    folder.mkdir()
    for name in union:
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
    (root / "images_detected").symlink_to(folder, target_is_directory=True)
    classic_pool = [pq for pq in persons if pq[0] <= 3]
    testsets = [[classic_pool[i] for i in np.random.default_rng(s).choice(1_360, 100, False)]
                for s in range(20)]
    write_cuhk03_mat(root / "cuhk03_release" / "cuhk-03.mat", (1,) * 5,
                     {"labeled": set(), "detected": set()}, testsets)
    return root


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_new_protocol_official_counts(full_root: Path, variant: str) -> None:
    ds = load_dataset(f"cuhk03-{variant}", full_root)
    n_train, n_query, n_gallery = NEW_PROTOCOL[variant]
    assert (ds.num_train_pids, len(ds.train)) == (767, n_train)
    assert (len(ds.query), len(ds.gallery)) == (n_query, n_gallery)
    assert len({r.pid for r in ds.query}) == 700
    assert {r.camid for r in ds.train} == set(range(10))


@pytest.mark.parametrize("split", [0, 19])
def test_classic_official_counts(full_root: Path, split: int) -> None:
    ds = load_dataset("cuhk03", full_root, protocol="classic", split=split, variant="detected")
    assert ds.num_splits == 20
    assert ds.num_train_pids == 1_160
    assert len({r.pid for r in ds.val}) == 100
    assert len({r.pid for r in ds.query}) == len({r.pid for r in ds.gallery}) == 100
    no_val = load_dataset("cuhk03", full_root, protocol="classic", split=split, val_ids=0)
    assert no_val.num_train_pids == 1_260 and no_val.val == []
