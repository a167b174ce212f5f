import hashlib
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit import __version__
from reidkit.data.dataset import ImageRecord, Sighting
from reidkit.data.transforms import build_transforms
from reidkit.models import build_model
from reidkit.models.io import load_model, save_model
from reidkit.retrieval.features import (
    FeatureFileError,
    FeatureSet,
    MissingImagesWarning,
    UnknownModelError,
    UnknownModelWarning,
    check_known_model,
    check_same_model,
    extract_feature_set,
    load_features,
    save_features,
)


def make_set(n: int = 5, dim: int = 7) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        features=rng.standard_normal((n, dim)).astype(np.float32),
        paths=[f"/data/ünïcode é/{i:04d}_c{i % 3}s1.jpg" for i in range(n)],
        pids=rng.integers(-1, 1500, n),
        camids=rng.integers(0, 6, n),
        meta={"model_sha256": "ab" * 32, "input_size": [384, 128], "flip": True,
              "metric": "cosine", "nested": {"x": [1, 2.5, None]}},
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_is_exact(tmp_path, suffix):
    fs = make_set()
    path = tmp_path / f"gallery{suffix}"
    save_features(path, fs)
    back = load_features(path, check_images=False)  # the images are made up
    assert back.features.dtype == np.float32 and back.pids.dtype == np.int64
    assert back.camids.dtype == np.int64
    np.testing.assert_array_equal(back.features, fs.features)
    np.testing.assert_array_equal(back.pids, fs.pids)
    np.testing.assert_array_equal(back.camids, fs.camids)
    assert back.paths == fs.paths
    assert back.meta == fs.meta
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temporary left


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_empty_set_round_trips(tmp_path, suffix):
    fs = FeatureSet(np.zeros((0, 4), np.float32), [], np.zeros(0), np.zeros(0), {})
    save_features(tmp_path / f"e{suffix}", fs)
    back = load_features(tmp_path / f"e{suffix}")
    assert back.features.shape == (0, 4) and back.paths == [] and len(back) == 0


def test_npz_loads_without_pickle(tmp_path):
    save_features(tmp_path / "f.npz", make_set())
    with np.load(tmp_path / "f.npz", allow_pickle=False) as archive:
        assert archive["paths"].dtype.kind == "U"
        assert json.loads(str(archive["meta"]))["metric"] == "cosine"


def test_inconsistent_lengths_are_refused():
    with pytest.raises(ValueError, match="one path, pid and camid per feature row: 3 rows"):
        FeatureSet(np.zeros((3, 2)), ["a", "b"], np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        FeatureSet(np.zeros(3), ["a", "b", "c"], np.zeros(3), np.zeros(3))


def test_file_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="reidkit extract"):
        load_features(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        load_features(tmp_path / "features.h5")
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        save_features(tmp_path / "features.pkl", make_set())
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(FeatureFileError, match="not an .npz archive") as caught:
        load_features(tmp_path / "junk.npz")
    assert "pickle" not in str(caught.value)  # a text file is not "pickled data" (numpy's words)
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(FeatureFileError, match="junk.safetensors"):
        load_features(tmp_path / "junk.safetensors")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(FeatureFileError, match="not a reidkit feature file"):
        load_features(tmp_path / "other.npz")
    save_model(tmp_path / "model.safetensors",
               build_model("baseline", num_classes=3, backbone="resnet18"))
    with pytest.raises(FeatureFileError, match="not a reidkit feature file"):
        load_features(tmp_path / "model.safetensors")


def test_a_file_with_inconsistent_arrays_is_refused(tmp_path):
    fs = make_set(4)
    path = tmp_path / "f.npz"
    np.savez(path, format=np.array("reidkit-features/1"), features=fs.features, pids=fs.pids[:3],
             camids=fs.camids, paths=np.array(fs.paths), meta=np.array("{}"))
    with pytest.raises(FeatureFileError, match="4 rows but paths 4, pids \\(3,\\)"):
        load_features(path)


def test_meta_must_be_json(tmp_path):
    fs = make_set()
    fs.meta["bad"] = object()
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_features(tmp_path / "f.npz", fs)


def test_check_same_model():
    a, b = make_set(), make_set()
    check_same_model(a, b)
    b.meta["flip"] = False
    with pytest.raises(ValueError, match="flip: True vs False"):
        check_same_model(a, b)
    c = FeatureSet(np.zeros((1, 3)), ["x"], [0], [0], dict(a.meta))
    with pytest.raises(ValueError, match="7-d but gallery features are 3-d"):
        check_same_model(a, c)


def test_features_without_model_metadata_are_refused_unless_allowed(tmp_path):
    # Issue 13 item 11: such files were searched with no word about the unchecked model.
    a = make_set()
    unknown = FeatureSet(a.features, a.paths, a.pids, a.camids, {"metric": "cosine"})
    save_features(tmp_path / "other.npz", unknown)
    loaded = load_features(tmp_path / "other.npz", check_images=False)
    with pytest.raises(UnknownModelError, match=r"other\.npz does not record the model.*"
                                                "--allow-unknown-model"):
        check_same_model(a, loaded)
    with pytest.warns(UnknownModelWarning, match="using it anyway"):
        check_same_model(loaded, a, allow_unknown_model=True)
    with pytest.raises(UnknownModelError, match="the gallery feature set does not record"):
        check_known_model(unknown, "the gallery feature set")


def test_paths_work_from_any_working_directory(tmp_path, monkeypatch):
    # Issue 13 item 6: paths were stored relative to the working directory of `extract`, so
    # `visualize` and `serve` found no image when run from another folder.
    work = tmp_path / "project"
    (work / "images").mkdir(parents=True)
    Image.new("RGB", (8, 16)).save(work / "images" / "0001_c1s1_000001_00.jpg")
    outside = tmp_path / "elsewhere" / "0002_c2.jpg"
    outside.parent.mkdir()
    Image.new("RGB", (8, 16)).save(outside)
    monkeypatch.chdir(work)
    fs = FeatureSet(np.ones((2, 3)), ["images/0001_c1s1_000001_00.jpg", str(outside)], [1, 2], [0, 1],
                    {"model_sha256": "0" * 64})
    save_features(work / "g.safetensors", fs)
    save_features(work / "g.npz", fs)
    from safetensors import safe_open

    with safe_open(str(work / "g.safetensors"), framework="np") as fh:
        stored = json.loads(fh.metadata()["paths"])
    assert stored == [os.path.join("images", "0001_c1s1_000001_00.jpg"), str(outside)]
    monkeypatch.chdir(tmp_path / "elsewhere")
    for name in ("g.safetensors", "g.npz"):
        back = load_features(work / name)
        assert back.paths == [str(work / "images" / "0001_c1s1_000001_00.jpg"), str(outside)]
        assert all(os.path.isfile(p) for p in back.paths)
    # The folder with its features and images moves as a whole: the relative paths follow it.
    moved = tmp_path / "moved"
    shutil.move(work, moved)
    back = load_features(moved / "g.npz")
    assert back.paths[0] == str(moved / "images" / "0001_c1s1_000001_00.jpg")
    assert os.path.isfile(back.paths[0])


def test_missing_images_are_warned_about(tmp_path):
    fs = make_set()
    save_features(tmp_path / "g.npz", fs)
    with pytest.warns(MissingImagesWarning, match=r"5 of the 5 images named in .*g\.npz are missing"
                                                  r" \(first: /data/"):
        load_features(tmp_path / "g.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_features(tmp_path / "g.npz", check_images=False)


def test_an_old_file_keeps_its_working_directory_paths(tmp_path, monkeypatch):
    # Files written before paths_base existed: relative paths stay as they were (cwd-relative).
    fs = make_set()
    np.savez(tmp_path / "old.npz", format=np.array("reidkit-features/1"),
             paths=np.array(["a/x.jpg"] * 5), meta=np.array("{}"), features=fs.features,
             pids=fs.pids, camids=fs.camids)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(MissingImagesWarning, match="first: a/x.jpg"):
        assert load_features("old.npz").paths == ["a/x.jpg"] * 5


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_names_and_sightings_round_trip(tmp_path, suffix):
    fs = make_set(3)
    video = str(tmp_path / "cam1.avi")
    fs.cameras = ["6", None, "entrance"]
    fs.identities = ["alice", None, "0007"]
    fs.sightings = [Sighting(video, "cam1", 12, 1.2, (1, 2, 30, 90), 0.91, 4), None,
                    Sighting("/videos/b.mp4", "b", 0, 0.0, (0, 0, 5, 10), 0.5, 1)]
    save_features(tmp_path / f"g{suffix}", fs)
    back = load_features(tmp_path / f"g{suffix}", check_images=False)
    assert back.cameras == fs.cameras and back.identities == fs.identities
    assert back.sightings == fs.sightings
    assert [back.camera_label(i) for i in range(3)] == ["6", str(fs.camids[1]), "entrance"]
    assert back.identity_label(0) == "alice"
    with pytest.raises(ValueError, match="one entry of cameras per feature row: 3 rows but 2"):
        FeatureSet(fs.features, fs.paths, fs.pids, fs.camids, cameras=["a", "b"])


@pytest.fixture(scope="module")
def image_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    records = []
    for i in range(5):
        path = root / f"{i:04d}_c{i % 2 + 1}s1_000001_01.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 20, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), pid=i // 2, camid=i % 2))
    return records


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=4, backbone="resnet18", num_stripes=3)
    path = tmp_path_factory.mktemp("model") / "pyramid.safetensors"
    save_model(path, model, {"input_size": [64, 32]})
    return path


def reference_features(model_path, records, height, width, flip=False):
    model = load_model(model_path).eval()
    transform = build_transforms(height, width, train=False)
    images = torch.stack([transform(Image.open(r.path).convert("RGB")) for r in records])
    with torch.no_grad():
        feats = model(images)
        if flip:
            feats = (feats + model(images.flip(-1))) / 2
    return feats.numpy()


def test_extract_records_the_data_sets_own_names(model_file, image_records):
    # Issue 13 item 12: cameras were shown 0-based ("cam 1" for a _c2 file), named people by index.
    records = [image_records[0]._replace(identity="alice"), image_records[1],
               image_records[2]._replace(camera="door")]
    fs = extract_feature_set(model_file, records, num_workers=0, progress=False)
    assert fs.camids.tolist() == [0, 1, 0]
    assert fs.cameras == ["1", "2", "door"]  # from _c1 / _c2 in the names, or the record's own
    assert fs.identities == ["alice", "0", "1"]
    assert fs.sightings is None


def test_extract_feature_set_matches_a_direct_forward(model_file, image_records):
    fs = extract_feature_set(model_file, image_records, batch_size=2, num_workers=0, progress=False)
    expected = reference_features(model_file, image_records, 64, 32)
    np.testing.assert_allclose(fs.features, expected, rtol=1e-5, atol=1e-5)
    assert fs.features.shape == (5, 6 * 128)  # 3 stripes: 3 + 2 + 1 branches of 128
    assert fs.paths == [r.path for r in image_records]
    assert fs.pids.tolist() == [0, 0, 1, 1, 2] and fs.camids.tolist() == [0, 1, 0, 1, 0]
    assert fs.meta["input_size"] == [64, 32]  # from the model file
    assert fs.meta["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert fs.meta["model_config"]["name"] == "pyramid"
    assert fs.meta["model_config"]["backbone"] == "resnet18"
    assert fs.meta["model_file"] == "pyramid.safetensors"
    assert fs.meta["flip"] is False and fs.meta["metric"] == "euclidean"
    assert fs.meta["reidkit_version"] == __version__


def test_extract_with_flip_and_explicit_size(model_file, image_records):
    fs = extract_feature_set(model_file, image_records[:3], height=96, width=32, flip=True,
                             num_workers=0, progress=False)
    expected = reference_features(model_file, image_records[:3], 96, 32, flip=True)
    np.testing.assert_allclose(fs.features, expected, rtol=1e-5, atol=1e-5)
    assert fs.meta["input_size"] == [96, 32] and fs.meta["flip"] is True


def test_extract_needs_an_input_size(tmp_path, image_records):
    path = tmp_path / "m.safetensors"
    save_model(path, build_model("baseline", num_classes=3, backbone="resnet18"))
    with pytest.raises(ValueError, match=r"input size is not known; pass \(height, width\)"):
        extract_feature_set(path, image_records, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        extract_feature_set(path, image_records, height=64, width=32, metric="l1")
