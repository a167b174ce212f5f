"""A reidkit model inside BoxMOT: its ONNX ReID backend loads the export and a tracker runs on it.

BoxMOT is the optional `track` extra (in the test environment); without it these tests skip, and
fail under CI.
"""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from footage_fixtures import vtest_path

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidkit.export import export_for_tracker
from reidkit.models import build_model
from reidkit.models.io import save_model

pytestmark = pytest.mark.slow

SIZE = (96, 48)


def _boxmot():
    try:
        import boxmot
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("BoxMOT is part of the test environment: pip install -e '.[dev]'")
        pytest.skip("BoxMOT is not installed: pip install -e '.[track]'")
    return boxmot


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    _boxmot()
    root = tmp_path_factory.mktemp("tracker")
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=8, backbone="resnet18").eval()
    save_model(root / "m.safetensors", model, {"input_size": list(SIZE)})
    report = export_for_tracker(root / "m.safetensors", root / "reid.onnx")
    return model, report.path


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    capture = cv2.VideoCapture(str(vtest_path(tmp_path_factory)))
    out = []
    for _ in range(12):
        ok, frame = capture.read()
        assert ok
        out.append(frame)
    return out


def test_the_metadata_describes_the_input_boxmot_feeds(exported):
    _, path = exported
    meta = json.loads(Path(f"{path}.metadata.json").read_text())
    assert meta["preprocess"] == "resize"
    assert meta["input"]["size"] == list(SIZE) and meta["input"]["channels"] == "RGB"
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406]


def test_boxmot_embeddings_equal_reidkits_for_the_same_crops(exported, frames):
    from boxmot.reid.backends.onnx_backend import ONNXBackend

    model, path = exported
    backend = ONNXBackend(path, torch.device("cpu"), half=False)
    assert tuple(backend.input_shape) == SIZE  # read from the graph
    boxes = np.array([[300, 140, 340, 250], [410, 200, 455, 320], [100, 80, 140, 190]], np.float32)
    theirs = backend.get_features(boxes, frames[0])
    crops = backend.get_crops(boxes, frames[0])  # BoxMOT's own resize and normalisation
    with torch.no_grad():
        ours = model(crops).numpy()
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)  # BoxMOT L2-normalises
    assert theirs.shape == (3, 21 * 128)
    np.testing.assert_allclose(theirs, ours, atol=2e-5)
    # and the crops are what reidkit's own preprocessing gives the same pixels: RGB, ImageNet
    x1, y1, x2, y2 = boxes[0].astype(int)
    patch = cv2.resize(frames[0][y1:y2, x1:x2], SIZE[::-1], interpolation=cv2.INTER_LINEAR)
    rgb = torch.from_numpy(patch[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(crops[0], (rgb - mean) / std, atol=1e-5, rtol=0)


def test_botsort_tracks_people_in_vtest_with_the_reidkit_model(exported, frames):
    from boxmot import BotSort

    from reidkit.footage.detect import build_detector

    _, path = exported
    tracker = BotSort(reid_weights=path, device="cpu", half=False, use_cmc=False)
    detector = build_detector("hog")
    ids_per_frame = []
    for frame in frames:
        boxes, scores = detector(frame)
        dets = np.concatenate([boxes, scores[:, None], np.zeros((len(boxes), 1))], 1).astype(np.float32)
        tracks = tracker.update(dets, frame)
        ids_per_frame.append({int(t[4]) for t in tracks})
    seen = [ids for ids in ids_per_frame if ids]
    assert seen, "no confirmed track in 12 frames"
    # a person is followed: some id persists over at least 4 frames
    counts = {}
    for ids in ids_per_frame:
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    assert max(counts.values()) >= 4
    assert tracker._reid_model is not None  # the appearance model was built from reidkit's file
