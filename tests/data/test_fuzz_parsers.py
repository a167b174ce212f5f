"""Property-based tests of the data set parsers against hostile file names, list lines and layouts.

Whatever lies in a data folder, a parser may only (a) return records with sane ids, (b) skip a
file or line and count it in ``ReIDDataset.notes``, or (c) raise ``DatasetLayoutError`` naming the
root. Official names must parse to exactly the pid and camera they spell.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reidkit.data import ImageRecord, ReIDDataset, load_dataset
from reidkit.data.datasets import DatasetLayoutError

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
INT64_MAX = 2**63 - 1  # ids beyond this break torch collation and numpy arrays downstream
MARKET_SUBSETS = ("bounding_box_train", "query", "bounding_box_test")

# --- name strategies -------------------------------------------------------------------------------

# Anything Linux accepts as a file name: no '/', no NUL, at most 255 bytes, not '.' or '..'.
FS_NAME = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=30
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)

# Number-like fields that are almost right: wrong digit counts, signs, huge values, other scripts.
NEAR_NUMBER = st.one_of(
    st.from_regex(r"[0-9]{1,8}", fullmatch=True),
    st.just("-1"),
    st.just("-0"),
    st.just("0"),
    st.integers(-10**6, -2).map(str),
    st.integers(INT64_MAX + 1, 10**40).map(str),
    st.text(st.characters(categories=("Nd",)), min_size=1, max_size=5),  # unicode digits
    st.sampled_from(["+7", "1_0", "", " 1", "0x1f", "1e3"]),
)
EXT = st.sampled_from([".jpg", ".JPG", ".jpeg", ".png", ".PNG", "", ".gif", ".jpg.tmp", ".txt", "."])


def _mutate(name: str, where: int, text: str, delete: bool) -> str:
    """Insert ``text`` at, or delete the character at, position ``where`` of ``name``."""
    i = where % (len(name) + 1)
    return name[:i] + name[i + 1:] if delete else name[:i] + text + name[i:]


def _names(official: st.SearchStrategy[str], near_miss: st.SearchStrategy[str]) -> st.SearchStrategy:
    mutated = st.builds(_mutate, official, st.integers(0, 40),
                        st.sampled_from(["0", "_", "-", "c", "s", "f", ".", "٣", " "]), st.booleans())
    return st.lists(
        st.one_of(official, near_miss, mutated, FS_NAME).filter(lambda s: len(s.encode()) <= 255),
        max_size=10, unique=True,
    )


MARKET_OFFICIAL = st.builds(
    lambda pid, cam, seq, frame, box, ext: f"{pid}_c{cam}s{seq}_{frame:06d}_{box:02d}{ext}",
    st.one_of(st.integers(0, 1501).map("{:04d}".format), st.just("-1")),
    st.integers(1, 6), st.integers(1, 6), st.integers(0, 999_999), st.integers(0, 99),
    st.sampled_from([".jpg", ".JPG", ".jpeg", ".png"]),
)
MARKET_NEAR = st.builds(
    lambda pid, cam, seq, frame, box, ext: f"{pid}_c{cam}s{seq}_{frame}_{box}{ext}",
    NEAR_NUMBER, NEAR_NUMBER, NEAR_NUMBER, NEAR_NUMBER, NEAR_NUMBER, EXT,
)
DUKE_OFFICIAL = st.builds(
    lambda pid, cam, frame, ext: f"{pid}_c{cam}_f{frame:07d}{ext}",
    st.one_of(st.integers(0, 7140).map("{:04d}".format), st.just("-1")),
    st.integers(1, 8), st.integers(0, 9_999_999), st.sampled_from([".jpg", ".JPG", ".png"]),
)
DUKE_NEAR = st.builds(lambda pid, cam, frame, ext: f"{pid}_c{cam}_f{frame}{ext}",
                      NEAR_NUMBER, NEAR_NUMBER, NEAR_NUMBER, EXT)

_MARKET_OFFICIAL_RE = re.compile(r"(-1|[0-9]{4})_c([1-6])s[1-6]_[0-9]{6}_[0-9]{2}\.(?:jpe?g|png)", re.I)
_DUKE_OFFICIAL_RE = re.compile(r"(-1|[0-9]{4})_c([1-8])_f[0-9]{7}\.(?:jpg|png)", re.I)

# --- shared checks ---------------------------------------------------------------------------------

_COUNTED = re.compile(r"(?:skipped|dropped) (\d+) ")


def counted(notes: Iterable[str]) -> int:
    """Files or lines that the notes say were skipped or dropped."""
    return sum(int(m.group(1)) for note in notes if (m := _COUNTED.match(note)))


def touch(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def leading_int(name: str) -> int:
    """The number before the first '_' of a file name (unicode digits read as Python reads them)."""
    return int(name.split("_", 1)[0])


def assert_sane_ids(records: Iterable[ImageRecord], *, min_pid: int) -> None:
    for r in records:
        assert isinstance(r.pid, int) and isinstance(r.camid, int)
        assert min_pid <= r.pid <= INT64_MAX, f"pid {r.pid} from {os.path.basename(r.path)!r}"
        assert 0 <= r.camid <= INT64_MAX, f"camid {r.camid} from {os.path.basename(r.path)!r}"


def assert_relabelled(train: list[ImageRecord], original: dict[str, int]) -> None:
    """Train pids are 0..N-1, and the relabelling is an order-preserving bijection."""
    labels = {original[r.path]: r.pid for r in train}
    assert sorted(labels.values()) == list(range(len(labels)))
    assert [labels[p] for p in sorted(labels)] == list(range(len(labels)))
    assert all(labels[original[r.path]] == r.pid for r in train)


def check_market_style(dataset: ReIDDataset, root: Path, names: dict[str, list[str]],
                       official: re.Pattern[str]) -> None:
    """Records + counted skips account for every file; official names parse exactly."""
    kept = {s: {os.path.basename(r.path): r for r in recs}
            for s, recs in zip(MARKET_SUBSETS, (dataset.train, dataset.query, dataset.gallery),
                               strict=True)}
    total = sum(len(v) for v in names.values())
    assert sum(len(v) for v in kept.values()) + counted(dataset.notes) == total, dataset.notes
    for subset, records in kept.items():
        for name, r in records.items():
            assert name in names[subset] and r.path == str(root / subset / name)
        assert_sane_ids(records.values(), min_pid=0)
    for subset in ("query", "bounding_box_test"):
        for name, r in kept[subset].items():
            assert r.pid == leading_int(name)
    for subset, subset_names in names.items():
        for name in subset_names:
            m = official.fullmatch(name)
            if m is None:
                continue
            pid, cam = int(m.group(1)), int(m.group(2))
            dropped = pid == -1 or (pid == 0 and subset != "bounding_box_test")
            assert (name in kept[subset]) != dropped, name
            if name in kept[subset]:
                assert kept[subset][name].camid == cam - 1
                if subset != "bounding_box_train":
                    assert kept[subset][name].pid == pid
    train = dataset.train
    original = {r.path: leading_int(os.path.basename(r.path)) for r in train}
    assert all(p >= 1 for p in original.values())
    assert_relabelled(train, original)


def market_subset_names(names: st.SearchStrategy) -> st.SearchStrategy[dict[str, list[str]]]:
    return st.fixed_dictionaries({s: names for s in MARKET_SUBSETS})


# --- Market-1501 / DukeMTMC-reID -------------------------------------------------------------------


@FUZZ
@given(market_subset_names(_names(MARKET_OFFICIAL, MARKET_NEAR)))
@example({"bounding_box_train": [], "query": ["0002_c0s1_000451_03.jpg"], "bounding_box_test": []})
@example({"bounding_box_train": [], "query": ["-5_c1s1_000451_03.jpg"], "bounding_box_test": []})
@example({"bounding_box_train": [], "query": [], "bounding_box_test": [f"{10**20}_c1s1_000451_03.jpg"]})
def test_market1501_names(names: dict[str, list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for subset, subset_names in names.items():
            touch(root / subset, subset_names)
        check_market_style(load_dataset("market1501", root), root, names, _MARKET_OFFICIAL_RE)


@FUZZ
@given(market_subset_names(_names(DUKE_OFFICIAL, DUKE_NEAR)))
@example({"bounding_box_train": [], "query": ["0005_c0_f0046985.jpg"], "bounding_box_test": []})
@example({"bounding_box_train": ["-7_c2_f0046985.jpg"], "query": [], "bounding_box_test": []})
def test_dukemtmcreid_names(names: dict[str, list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "DukeMTMC-reID"  # the parser also looks one level down
        for subset, subset_names in names.items():
            touch(root / subset, subset_names)
        check_market_style(load_dataset("dukemtmc-reid", root.parent), root, names, _DUKE_OFFICIAL_RE)


# Each required entry is absent, a folder, or a plain file where a folder belongs.
ENTRY = st.sampled_from(["absent", "dir", "file"])


@FUZZ
@given(st.sampled_from(["market1501", "dukemtmcreid"]), st.booleans(),
       st.fixed_dictionaries({s: ENTRY for s in MARKET_SUBSETS}))
@example("market1501", False, {"bounding_box_train": "dir", "query": "file", "bounding_box_test": "dir"})
def test_market_style_layouts(name: str, nested: bool, entries: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        parent = "Market-1501-v15.09.15" if name == "market1501" else "DukeMTMC-reID"
        base = root / parent if nested else root
        base.mkdir(parents=True)
        for subset, kind in entries.items():
            if kind == "dir":
                touch(base / subset, ["0001_c1s1_000001_01.jpg", "0001_c1_f0000001.jpg"])
            elif kind == "file":
                (base / subset).write_bytes(b"")
        if all(kind == "dir" for kind in entries.values()):
            dataset = load_dataset(name, root)
            assert counted(dataset.notes) + len(dataset.train) + len(dataset.query) \
                + len(dataset.gallery) == 6
            return
        with pytest.raises(DatasetLayoutError) as err:
            load_dataset(name, root)
        assert str(root) in str(err.value) and "Expected layout" in str(err.value)


# --- MSMT17 list files -----------------------------------------------------------------------------

# Line contents never hold a line break, so the test and the parser agree on what a line is.
LINE_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=60)
MSMT_OFFICIAL = st.builds(
    lambda pid, seq, cam, tag, frame, box: (
        f"{pid:04d}/{pid:04d}_{seq:03d}_{cam:02d}_{tag}_{frame:04d}_{box} {pid}"),
    st.integers(0, 3059), st.integers(0, 999), st.integers(1, 15),
    st.sampled_from(["0303morning", "0113noon", "0302afternoon"]),
    st.integers(0, 9999), st.integers(0, 9).map(lambda b: f"{b}.jpg"),
)
MSMT_NEAR = st.builds(
    lambda pid, cam, fields, sep, tail: f"{pid}/{pid}_000_{cam}_0303morning_0015_0.jpg{sep}{fields}{tail}",
    NEAR_NUMBER.filter(lambda s: s.strip() and "/" not in s), NEAR_NUMBER, NEAR_NUMBER,
    st.sampled_from([" ", "\t", "  ", "\u3000", ""]), st.sampled_from(["", " 1", " extra field"]),
)
_MSMT_OFFICIAL_RE = re.compile(
    r"([0-9]{4})/\1_[0-9]{3}_(0[1-9]|1[0-5])_[a-z0-9]+_[0-9]{4}_[0-9]\.jpg ([0-9]+)")


def _plain_int(token: str, minimum: int) -> bool:
    """A decimal number written as digits only (no sign, no '_' grouping), at least ``minimum``."""
    return token.isdecimal() and minimum <= int(token) <= INT64_MAX


@FUZZ
@given(st.lists(st.one_of(MSMT_OFFICIAL, MSMT_NEAR, LINE_TEXT), max_size=12),
       st.lists(st.one_of(MSMT_OFFICIAL, MSMT_NEAR, LINE_TEXT), max_size=12))
@example(["0001/0001_000_00_0303morning_0015_0.jpg 1"], [])
@example(["0001/0001_000_-3_0303morning_0015_0.jpg 1"], ["0002/0002_000_03_0303morning_0015_0.jpg -5"])
@example([], ["0003/0003_000_03_0303morning_0015_0.jpg 1_0", "0004/0004_000_03_x_0_0.jpg +4"])
def test_msmt17_list_lines(query: list[str], gallery: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train").mkdir()
        (root / "test").mkdir()
        (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n")
        (root / "list_val.txt").write_text("")
        (root / "list_query.txt").write_text("\n".join(query), encoding="utf-8")
        (root / "list_gallery.txt").write_text("\n".join(gallery) + "\n", encoding="utf-8")
        dataset = load_dataset("msmt17", root)

    lines = [line for line in query + gallery if line.split()]
    assert len(dataset.query) + len(dataset.gallery) + counted(dataset.notes) == len(lines)
    assert len(dataset.train) == 1 and dataset.train[0].pid == 0
    pre = str(root / "test") + os.sep  # records hold prefix + the listed relative path
    for records, listed in ((dataset.query, query), (dataset.gallery, gallery)):
        two_fields = [f for f in (line.split() for line in listed) if len(f) == 2]
        for r in records:
            sources = [(f[1], f[0].rsplit("/", 1)[-1].split("_")) for f in two_fields
                       if pre + f[0] == r.path]
            assert any(_plain_int(pid, 0) and int(pid) == r.pid and len(parts) > 2
                       and _plain_int(parts[2], 1) and int(parts[2]) - 1 == r.camid
                       for pid, parts in sources), (r, sources)
        parsed = {(r.path, r.pid, r.camid) for r in records}
        for line in listed:
            m = _MSMT_OFFICIAL_RE.fullmatch(line)
            if m:
                assert (pre + line.split()[0], int(m.group(3)), int(m.group(2)) - 1) in parsed, line


@FUZZ
@given(st.binary(max_size=200))
@example(b"\xff\xfe0001/0001_000_01_x_0_0.jpg 1\n")
def test_msmt17_undecodable_list(data: bytes) -> None:
    """A list file that is not UTF-8 is skipped line by line or rejected naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train").mkdir()
        (root / "test").mkdir()
        for name in ("list_train.txt", "list_val.txt", "list_gallery.txt"):
            (root / name).write_text("")
        (root / "list_query.txt").write_bytes(data)
        try:
            dataset = load_dataset("msmt17", root)
        except ValueError as err:
            assert "list_query.txt" in str(err), f"{type(err).__name__}: {err}"
            return
        assert_sane_ids(dataset.query, min_pid=0)


@FUZZ
@given(st.sampled_from(["v1", "v2"]), st.booleans(),
       st.fixed_dictionaries({n: ENTRY for n in ("train_dir", "test_dir", "list_train.txt",
                                                  "list_val.txt", "list_query.txt",
                                                  "list_gallery.txt")}))
def test_msmt17_layouts(version: str, nested: bool, entries: dict[str, str]) -> None:
    folders = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}[version]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "msmt"
        base = root / f"MSMT17_{version.upper()}" if nested else root
        base.mkdir(parents=True)
        complete = True
        for entry, kind in entries.items():
            path = base / {"train_dir": folders[0], "test_dir": folders[1]}.get(entry, entry)
            wanted = "dir" if entry.endswith("_dir") else "file"
            complete &= kind == wanted
            if kind == "dir":
                path.mkdir()
            elif kind == "file":
                path.write_text("")
        if complete:
            assert load_dataset("msmt17", root).query == []
            return
        with pytest.raises(DatasetLayoutError) as err:
            load_dataset("msmt17", root)
        assert str(root) in str(err.value)


# --- user folders ----------------------------------------------------------------------------------

IMAGE_NAME = st.one_of(
    st.builds(lambda pid, cam, ext: f"{pid}_c{cam}_x{ext}", NEAR_NUMBER, NEAR_NUMBER, EXT),
    st.builds(lambda pid, ext: f"{pid}_{ext}", NEAR_NUMBER, EXT),
    MARKET_OFFICIAL, FS_NAME,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)
# Identity folder names; subset names are left out, as they would turn the root into subsets.
IDENTITY = st.one_of(NEAR_NUMBER, FS_NAME).filter(
    lambda s: s.strip(".") and len(s.encode()) <= 255
    and s not in ("train", "query", "gallery", "bounding_box_train", "bounding_box_test"))
# A subset is flat (a list of file names) or per identity ({folder: names}, plus loose files).
SUBSET = st.one_of(
    st.lists(IMAGE_NAME, max_size=8, unique=True),
    st.tuples(
        st.dictionaries(IDENTITY, st.lists(IMAGE_NAME, max_size=4, unique=True), min_size=1, max_size=4),
        st.lists(IMAGE_NAME, max_size=2, unique=True),
    ),
)
FOLDER_LAYOUT = st.dictionaries(st.sampled_from(["train", "query", "gallery", "<root>"]), SUBSET,
                                min_size=1, max_size=3)


def build_folder(root: Path, layout: dict[str, object]) -> int:
    """Write ``layout`` under ``root``; return the number of files written."""
    files = 0
    for role, content in layout.items():
        folder = root if role == "<root>" else root / role
        if isinstance(content, list):
            touch(folder, content)
            files += len(content)
            continue
        identities, loose = content
        touch(folder, [n for n in loose if n not in identities])
        files += len([n for n in loose if n not in identities])
        for identity, names in identities.items():
            touch(folder / identity, names)
            files += len(names)
    return files


@FUZZ
@given(FOLDER_LAYOUT)
@example({"query": ["-5_c1.jpg"], "gallery": ["0002_c0.jpg", "3_c2.jpg"]})
@example({"gallery": ({"3": ["b_c2.jpg"]}, []), "query": ({"-5": ["a_c1.jpg"]}, [])})
@example({"gallery": [f"{10**20}_c{10**20}.jpg"], "query": ["1_c1.jpg"]})
def test_folder_layouts(layout: dict[str, object]) -> None:
    if "<root>" in layout and len(layout) > 1:
        layout = {"<root>": layout["<root>"]}  # loose files next to subset folders are not images
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mine"
        root.mkdir()
        files = build_folder(root, layout)
        try:
            dataset = load_dataset("folder", root)
        except DatasetLayoutError as err:
            assert str(root) in str(err)
            assert ("no usable images" in str(err)
                    or ("query" in layout and "gallery" not in layout)), str(err)
            return
    assert not ("query" in layout and "gallery" not in layout)
    kept = len(dataset.train) + len(dataset.query) + len(dataset.gallery)
    assert kept + counted(dataset.notes) == files, dataset.notes
    search_only = "query" not in layout
    assert_sane_ids(dataset.query, min_pid=0)
    assert_sane_ids(dataset.gallery, min_pid=-1 if search_only else 0)
    assert_sane_ids(dataset.train, min_pid=0)
    assert sorted({r.pid for r in dataset.train}) == list(range(dataset.num_train_pids))


def test_folder_missing_root(tmp_path: Path) -> None:
    for root in (tmp_path / "absent", tmp_path / "a_file"):
        if root.name == "a_file":
            root.write_bytes(b"")
        with pytest.raises(DatasetLayoutError, match="folder not found") as err:
            load_dataset("folder", root)
        assert str(root) in str(err.value)
