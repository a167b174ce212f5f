"""Synthetic Market-style data generator and the colour-histogram baseline."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit.data import synthetic
from reidkit.data.synthetic import PRESETS, generate, plan, render
from reidkit.models.histogram import color_histogram_features

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SUBSETS = ("bounding_box_train", "query", "bounding_box_test")


def parse(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """(pid, 1-based camera, file name) per subset, straight from Market-1501 names."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for sub in SUBSETS:
        rows = []
        for f in sorted((root / sub).iterdir()):
            m = NAME.match(f.name)
            assert m, f"not a Market-1501 name: {f.name}"
            rows.append((int(m.group(1)), int(m.group(2)), f.name))
        out[sub] = rows
    return out


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("syn") / "tiny"
    return root, generate(root, "tiny", seed=3)


# ------------------------------------------------------------------------------ generator


def test_layout_counts_and_names(tiny):
    root, stats = tiny
    p = PRESETS["tiny"]
    subsets = parse(root)
    train, query, gallery = (subsets[s] for s in SUBSETS)
    train_ids = {pid for pid, _, _ in train}
    test_ids = {pid for pid, _, _ in query + gallery} - {0, -1}

    assert len(train_ids) == p["num_train_ids"] == stats["train"]["ids"]
    assert len(train) == p["num_train_ids"] * p["images_per_id"] == stats["train"]["images"]
    assert len(test_ids) == p["num_test_ids"] == stats["query"]["ids"] == stats["gallery"]["ids"]
    real_gallery = [g for g in gallery if g[0] > 0]
    assert len(query) + len(real_gallery) == p["num_test_ids"] * p["images_per_id"]
    assert sum(pid == 0 for pid, _, _ in gallery) == p["num_distractors"]
    assert sum(pid == -1 for pid, _, _ in gallery) == p["num_junk"]
    assert len(gallery) == stats["gallery"]["images"]
    assert len(query) == stats["query"]["images"]
    # pids 1-based, train and test disjoint and together 1..N; cameras 1..num_cams.
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(1, p["num_train_ids"] + p["num_test_ids"] + 1))
    cams = {c for rows in subsets.values() for _, c, _ in rows}
    assert cams <= set(range(1, p["num_cams"] + 1))
    # Distractors and junk only in the gallery; file names unique.
    assert all(pid > 0 for pid, _, _ in train + query)
    names = [n for rows in subsets.values() for _, _, n in rows]
    assert len(names) == len(set(names))


def test_query_protocol(tiny):
    root, _ = tiny
    subsets = parse(root)
    query, gallery = subsets["query"], subsets["bounding_box_test"]
    # One query per identity and camera, and each has a match in another camera.
    assert max(Counter((pid, c) for pid, c, _ in query).values()) == 1
    gallery_cams = defaultdict(set)
    for pid, c, _ in gallery:
        gallery_cams[pid].add(c)
    for pid, c, _ in query:
        assert gallery_cams[pid] - {c}, f"query {pid} cam {c} has no cross-camera match"
    # Every identity is seen by at least two cameras.
    all_cams = defaultdict(set)
    for rows in subsets.values():
        for pid, c, _ in rows:
            all_cams[pid].add(c)
    assert all(len(cs) >= 2 for pid, cs in all_cams.items() if pid > 0)


def test_query_fraction_one_gives_a_query_per_camera_where_possible():
    p = synthetic.resolve_options("demo", {"query_fraction": 1.0})
    specs = [s for s in plan(p) if s.kind == "id" and not s.path.startswith("bounding_box_train")]
    by_pid = defaultdict(list)
    for s in specs:
        by_pid[s.path.split("/")[1][:4]].append(s)
    for items in by_pid.values():
        cams = {s.cam for s in items}
        query_cams = {s.cam for s in items if s.path.startswith("query/")}
        assert len(query_cams) >= len(cams) - 1


def test_meta_readme_and_annotations(tiny):
    root, stats = tiny
    meta = json.loads((root / "meta.json").read_text())
    assert meta["params"]["seed"] == 3 and meta["params"]["domain"] == "a"
    assert meta["layout"] == "market1501" and len(meta["cameras"]) == PRESETS["tiny"]["num_cams"]
    assert meta["counts"]["train"] == stats["train"]
    assert "seed: 3" in (root / "README.txt").read_text()
    with open(root / "annotations.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == stats["images"]
    assert {r["kind"] for r in rows} == {"id", "distractor", "junk"}
    assert all((root / r["file"]).is_file() for r in rows)


def test_images_have_requested_size(tiny, tmp_path):
    root, _ = tiny
    for f in list((root / "query").iterdir())[:3]:
        with Image.open(f) as im:
            assert (im.size, im.mode, im.format) == ((64, 128), "RGB", "JPEG")
    generate(tmp_path / "small", "tiny", height=96, width=40, num_distractors=0, num_junk=0)
    sizes = {Image.open(f).size for f in (tmp_path / "small").rglob("*.jpg")}
    assert sizes == {(40, 96)}


def test_deterministic_from_seed(tiny, tmp_path):
    root, _ = tiny
    same = generate(tmp_path / "same", "tiny", seed=3)
    assert same["images"] > 0
    assert file_bytes(tmp_path / "same") == file_bytes(root)
    generate(tmp_path / "other", "tiny", seed=4)
    a, b = file_bytes(root), file_bytes(tmp_path / "other")
    jpgs_a = {v for k, v in a.items() if k.endswith(".jpg")}
    jpgs_b = {v for k, v in b.items() if k.endswith(".jpg")}
    assert not jpgs_a & jpgs_b


def test_workers_do_not_change_the_output(tiny, tmp_path):
    root, _ = tiny
    generate(tmp_path / "par", "tiny", seed=3, workers=2)
    assert file_bytes(tmp_path / "par") == file_bytes(root)


@pytest.fixture(scope="module")
def demo_plan() -> tuple[dict, list]:
    p = synthetic.resolve_options("demo", {})
    return p, plan(p)


def _render_many(demo_plan, misalign: bool, n: int = 24):
    specs = [s for s in demo_plan[1] if s.kind == "id"][:n]
    return [render(s, domain="a", height=128, width=64, misalign=misalign, occlusion=False,
                   return_mask=True)[1] for s in specs]


def test_aligned_boxes_frame_the_person_with_a_fixed_margin(demo_plan):
    for info in _render_many(demo_plan, misalign=False):
        assert info.person_top == pytest.approx(0.05 * 128)
        assert info.person_bottom == pytest.approx(0.95 * 128)
        rows = np.flatnonzero(info.mask.any(axis=1))
        assert 5 <= rows[0] <= 8 and 119 <= rows[-1] <= 122  # head and shoe outlines


def test_misaligned_boxes_shift_scale_and_cut_the_person(demo_plan):
    infos = _render_many(demo_plan, misalign=True, n=60)
    tops = np.array([i.person_top for i in infos])
    heights = np.array([i.person_bottom - i.person_top for i in infos])
    first_rows = np.array([np.flatnonzero(i.mask.any(axis=1))[0] for i in infos])
    assert tops.std() > 5.0 and heights.std() > 5.0
    assert (first_rows == 0).any()  # the head is cut by the box top
    assert (np.array([i.person_bottom for i in infos]) > 128).any()  # feet cut
    # The ground-truth extent agrees with the drawn pixels where the head is inside the box.
    inside = tops > 2
    assert np.abs(first_rows[inside] - tops[inside]).max() <= 2.5


def test_occlusion_switch(tmp_path):
    def occlusions(root: Path) -> Counter:
        with open(root / "annotations.csv") as f:
            return Counter(r["occluded"] for r in csv.DictReader(f) if r["kind"] == "id")

    generate(tmp_path / "on", "tiny", occlusion_prob=1.0)
    generate(tmp_path / "off", "tiny", occlusion=False)
    on, off = occlusions(tmp_path / "on"), occlusions(tmp_path / "off")
    assert on["none"] == 0 and on["person"] > 0 and on["object"] > 0
    assert set(off) == {"none"}


def test_domains_differ_in_camera_style(tmp_path):
    a = [synthetic.camera_style("a", c) for c in range(6)]
    b = [synthetic.camera_style("b", c) for c in range(6)]
    assert np.mean([s.gain for s in b]) < np.mean([s.gain for s in a])
    assert np.mean([s.resolution for s in b]) < np.mean([s.resolution for s in a])
    generate(tmp_path / "a", "tiny", domain="a")
    generate(tmp_path / "b", "tiny", domain="b")
    mean = {d: np.mean([np.asarray(Image.open(f)).mean() for f in (tmp_path / d).rglob("*.jpg")])
            for d in "ab"}
    assert mean["b"] < mean["a"]


def test_attributes_are_shared_between_identities(demo_plan):
    p, specs = demo_plan
    idents = {s.path.split("/")[1][:4]: s.identity for s in specs if s.kind == "id"}
    assert len(idents) == p["num_train_ids"] + p["num_test_ids"]
    upper = Counter(i.upper for i in idents.values())
    pairs = Counter((i.upper, i.lower) for i in idents.values())
    assert len(upper) == len(synthetic.CLOTHES) and min(upper.values()) >= 5
    shared = sum(n for n in pairs.values() if n > 1) / len(idents)
    assert shared > 0.4  # most people share their clothing colours with someone else


@pytest.mark.parametrize(
    ("opts", "error"),
    [({"num_cams": 10}, ValueError), ({"domain": "c"}, ValueError),
     ({"images_per_id": 1}, ValueError), ({"query_fraction": 0.0}, ValueError),
     ({"colour": 1}, TypeError)],
)
def test_bad_options_raise_clear_errors(tmp_path, opts, error):
    with pytest.raises(error):
        generate(tmp_path / "x", "tiny", **opts)


def test_refuses_non_empty_out_dir_and_unknown_preset(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="empty"):
        generate(tmp_path / "busy", "tiny")
    with pytest.raises(ValueError, match="tiny"):
        generate(tmp_path / "y", "huge")


# ------------------------------------------------------------------------------ histograms


def test_hand_computed_rgb_histogram():
    img = np.zeros((4, 2, 3), np.uint8)
    img[0] = [(0, 0, 0), (255, 255, 255)]
    img[1] = [(200, 0, 0), (0, 0, 0)]
    img[2] = [(0, 130, 0), (0, 0, 0)]
    img[3] = [(0, 0, 255), (0, 0, 255)]
    f = color_histogram_features([img], bins=(2, 2, 2), stripes=2, space="rgb", norm="l1")
    # bin = (r * 2 + g) * 2 + b with each channel 0 below 128 and 1 from 128.
    expected = np.zeros(16)
    expected[[0, 7, 4]] = [0.5, 0.25, 0.25]  # rows 0-1: 2 black, white, red
    expected[[8 + 0, 8 + 2, 8 + 1]] = [0.25, 0.25, 0.5]  # rows 2-3: black, green, 2 blue
    np.testing.assert_allclose(f[0], expected / 2, atol=1e-7)


def test_hand_computed_hsv_histogram():
    # PIL HSV: red (0, 255, 255), green (85, 255, 255), blue (170, 255, 255), white (0, 0, 255).
    img = np.array([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]], np.uint8)
    f = color_histogram_features([img], bins=(4, 2, 2), stripes=1, norm="l1")
    expected = np.zeros(16)
    expected[[3, 7, 11, 1]] = 0.25  # (h * 2 + s) * 2 + v with h = 0, 1, 2, 0
    np.testing.assert_allclose(f[0], expected, atol=1e-7)
    g = color_histogram_features([img], bins=(4, 2, 2), stripes=1, norm="l2", sqrt=True)
    np.testing.assert_allclose(g[0], expected ** 0.5 / np.linalg.norm(expected ** 0.5),
                               atol=1e-6)


def test_histogram_shape_normalisation_and_inputs(tiny):
    root, _ = tiny
    paths = sorted((root / "query").iterdir())[:3]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    l2 = color_histogram_features(paths, bins=(8, 4, 4), stripes=6)
    assert l2.shape == (3, 6 * 128) and l2.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-5)
    l1 = color_histogram_features(np.stack(arrays), stripes=3, norm="l1", space="rgb")
    np.testing.assert_allclose(l1.sum(axis=1), 1.0, rtol=1e-5)
    # Each stripe weighs the same: a third of the mass per stripe.
    np.testing.assert_allclose(l1.reshape(3, 3, -1).sum(axis=2), 1 / 3, rtol=1e-5)
    # Paths, arrays and PIL images give the same features; identical images are at distance 0.
    np.testing.assert_array_equal(color_histogram_features(arrays), l2)
    np.testing.assert_array_equal(color_histogram_features([Image.open(paths[0])])[0], l2[0])
    assert np.linalg.norm(l2[0] - color_histogram_features([paths[0]])[0]) == 0.0
    assert np.linalg.norm(l2[0] - l2[1]) > 0.05


def test_histogram_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="check the path"):
        color_histogram_features([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="uint8"):
        color_histogram_features([np.zeros((8, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="space"):
        color_histogram_features([np.zeros((8, 4, 3), np.uint8)], space="lab")
    with pytest.raises(ValueError, match="stripes"):
        color_histogram_features([np.zeros((2, 4, 3), np.uint8)], stripes=6)
