"""Ingest of real footage: detection, tracklets, crops, sidecar, resume and errors, on vtest.avi."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from footage_fixtures import FRAMES, ingest_slice, vtest_path
from PIL import Image

from reidkit.data import load_dataset
from reidkit.data.sidecar import SIDECAR, attach_sightings, read_sightings
from reidkit.footage import (
    DetectionFilter,
    DetectorError,
    HOGDetector,
    IngestError,
    IngestSettings,
    TorchvisionDetector,
    VideoError,
    build_detector,
    ingest,
    probe,
    read_frame,
)
from reidkit.footage.detect import filter_detections
from reidkit.footage.video import frames


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vtest_path(tmp_path_factory)


@pytest.fixture(scope="module")
def ingested(video: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ingest") / "out"
    return out, ingest_slice(video, out)


def sidecar_rows(out: Path) -> list[dict[str, str]]:
    with open(out / SIDECAR, newline="") as fh:
        return list(csv.DictReader(fh))


def test_probe_reads_the_video_properties(video: Path) -> None:
    info = probe(video)
    assert (info.fps, info.width, info.height, info.frame_count) == (10.0, 768, 576, 795)


def test_read_frame_equals_the_decoded_sequence(video: Path) -> None:
    sequence = dict(frames(video, start=3, stop=12))
    assert sorted(sequence) == list(range(3, 12))
    for i in (3, 7, 11):
        np.testing.assert_array_equal(read_frame(video, i), sequence[i])
    with pytest.raises(VideoError, match="has no frame 5000"):
        read_frame(video, 5000)


def test_hog_finds_the_people_of_the_first_frame(video: Path) -> None:
    frame = read_frame(video, 0)
    boxes, scores = filter_detections(*HOGDetector()(frame), DetectionFilter(), frame.shape)
    # Frame 0 shows five walkers; HOG at 1.5x finds four to six boxes of person size above 0.6.
    assert 3 <= len(boxes) <= 7
    heights = boxes[:, 3] - boxes[:, 1]
    assert heights.min() >= 40 and heights.max() <= 200
    assert np.all(np.diff(scores) <= 0) and scores.min() >= 0.6


def test_filter_detections_by_hand() -> None:
    boxes = np.array([[0, 0, 20, 50],     # kept: ratio 2.5, score 0.9
                      [2, 0, 22, 50],     # IoU 18/22 with the first: suppressed
                      [100, 0, 150, 50],  # ratio 1.0: not a person's shape
                      [200, 0, 210, 20],  # 20 px high: too small
                      [300, 0, 320, 60],  # kept: ratio 3.0, score 0.7
                      [400, 0, 420, 60]], np.float32)  # score 0.3: too low
    scores = np.array([0.9, 0.8, 0.95, 0.9, 0.7, 0.3], np.float32)
    rule = DetectionFilter(min_score=0.5, aspect=(1.4, 4.0), min_height=40, nms_iou=0.5)
    kept, kept_scores = filter_detections(boxes, scores, rule, (100, 1000, 3))
    np.testing.assert_array_equal(kept, boxes[[0, 4]])
    np.testing.assert_array_equal(kept_scores, scores[[0, 4]])
    tall = DetectionFilter(min_score=0.5, max_height=55)
    assert len(filter_detections(boxes, scores, tall, (100, 1000, 3))[0]) == 1
    # Boxes are clipped to the frame first: this one keeps 40 of its 80 rows.
    clipped, _ = filter_detections(np.array([[0, 60, 16, 140]]), np.array([1.0]), rule, (100, 50, 3))
    np.testing.assert_array_equal(clipped, [[0, 60, 16, 100]])


def test_ingest_writes_crops_tracklets_and_a_sidecar(video: Path, ingested) -> None:
    out, summary = ingested
    rows = sidecar_rows(out)
    assert summary.frames == FRAMES and summary.videos[0].finished
    assert summary.crops == len(rows) == len(list((out / "gallery").glob("*.jpg")))
    tracklets = {int(r["tracklet"]) for r in rows}
    assert summary.tracklets == len(tracklets) >= 4  # about half a dozen walkers in 2 seconds
    assert tracklets == set(range(1, len(tracklets) + 1))
    for r in rows[:: max(1, len(rows) // 10)]:
        name = Path(r["path"]).name
        assert name == f"{int(r['tracklet']):04d}_c1s1_{int(r['frame']):06d}_00.jpg"
        assert float(r["time"]) == pytest.approx(int(r["frame"]) / 10.0)
        assert r["camera"] == "vtest" and r["video"] == str(video.resolve())
        x1, y1, x2, y2 = (int(r[k]) for k in ("x1", "y1", "x2", "y2"))
        crop = np.asarray(Image.open(out / r["path"]).convert("RGB"), dtype=np.float32)
        region = read_frame(video, int(r["frame"]))[y1:y2, x1:x2, ::-1].astype(np.float32)
        assert crop.shape == region.shape
        assert np.abs(crop - region).mean() < 4  # the same pixels, up to JPEG at quality 95
    # A tracklet is one person over consecutive frames: its box moves a few pixels per frame.
    first = sorted((int(r["frame"]), int(r["x1"])) for r in rows if r["tracklet"] == "1")
    assert len(first) >= 5
    assert max(abs(a[1] - b[1]) for a, b in zip(first, first[1:], strict=False)) < 25


def test_the_ingested_folder_loads_with_its_sightings(ingested) -> None:
    out, summary = ingested
    gallery = load_dataset("folder", out).gallery
    assert len(gallery) == summary.crops
    records = attach_sightings(gallery, out)
    assert all(r.sighting is not None for r in records)
    for r in records:
        assert r.pid == r.sighting.tracklet and r.camid == 0 and r.camera == "vtest"
        assert f"_{r.sighting.frame:06d}_" in Path(r.path).name
    assert len(read_sightings(out)) == summary.crops
    # The crop folder by itself: the sidecar one level up is found.
    alone = attach_sightings(load_dataset("folder", out / "gallery").gallery, out / "gallery")
    assert [r.sighting for r in alone] == [r.sighting for r in records]


def test_an_interrupted_ingest_resumes_to_the_same_result(video: Path, ingested, tmp_path: Path) -> None:
    out, _ = ingested
    short = 12
    expected = [r for r in sidecar_rows(out) if int(r["frame"]) < short]

    def kill_at_frame_7(camid: int, frame: int) -> None:
        if frame == 7:
            raise KeyboardInterrupt

    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ingest_slice(video, target, short, checkpoint_every=3, on_frame=kill_at_frame_7)
    # Frames 6 and 7 were written after the last commit (frame 5): the resume drops and redoes them.
    assert max(int(r["frame"]) for r in sidecar_rows(target)) == 7
    summary = ingest_slice(video, target, short, checkpoint_every=3)
    assert summary.resumed and summary.frames == short and summary.videos[0].finished
    assert sidecar_rows(target) == expected
    assert sorted(p.name for p in (target / "gallery").iterdir()) == sorted(
        Path(r["path"]).name for r in expected)
    again = ingest_slice(video, target, short)  # finished: nothing left to do
    assert again.resumed and again.crops == summary.crops and sidecar_rows(target) == expected


def test_an_ingest_folder_refuses_other_settings(video: Path, ingested, tmp_path: Path) -> None:
    out, _ = ingested
    with pytest.raises(IngestError, match=r"upscale: 1\.5 then, 2\.0 now.*--restart"):
        ingest([video], out, IngestSettings(max_frames=FRAMES, upscale=2.0), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(IngestError, match="not empty and holds no ingest"):
        ingest([video], tmp_path, IngestSettings(max_frames=2), progress=False)


def test_unreadable_videos_are_named(video: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(video.read_bytes()[:3000])
    for bad in (junk, truncated):
        with pytest.raises(VideoError, match=str(bad)):
            ingest([video, bad], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # every video is checked before any work
    with pytest.raises(VideoError, match="missing.mp4 does not exist"):
        probe(tmp_path / "missing.mp4")


def test_torchvision_detector_from_a_local_weights_file(video: Path, tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=91)
    weights = tmp_path / "ssdlite.pth"
    torch.save(model.state_dict(), weights)
    detector = build_detector("ssdlite320_mobilenet_v3_large", weights)
    assert isinstance(detector, TorchvisionDetector)
    boxes, scores = detector(read_frame(video, 0))
    assert boxes.shape[1:] == (4,) and scores.shape == (len(boxes),)
    assert np.all((scores >= 0) & (scores <= 1))
    with pytest.raises(DetectorError, match="needs a local weights file"):
        build_detector("ssdlite320_mobilenet_v3_large")
    with pytest.raises(DetectorError, match="does not hold fasterrcnn_mobilenet_v3_large_320_fpn"):
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights)
    with pytest.raises(DetectorError, match="unknown torchvision detector 'yolo'"):
        build_detector("yolo", weights)
