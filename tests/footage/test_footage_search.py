"""Search over ingested footage: features carry the sightings; the service shows camera, time, frame
and the frame with the box drawn, and filters by camera and time; the ingest command."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from footage_fixtures import ingest_slice, vtest_path
from PIL import Image

pytest.importorskip("fastapi", reason="the search service needs the 'serve' extra")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reidkit.footage import gallery_records, read_frame  # noqa: E402
from reidkit.models import build_model  # noqa: E402
from reidkit.models.io import save_model  # noqa: E402
from reidkit.retrieval.features import (  # noqa: E402
    extract_feature_set,
    load_features,
    save_features,
)
from reidkit.retrieval.search import GalleryIndex, search_subset  # noqa: E402
from reidkit.retrieval.visualize import GREEN, frame_picture  # noqa: E402
from reidkit.serve import create_app  # noqa: E402

FRAMES = 12


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 frames of vtest.avi ingested, a tiny model, and the crops' gallery features."""
    video = vtest_path(tmp_path_factory)
    root = tmp_path_factory.mktemp("footage")
    ingest_slice(video, root / "out", FRAMES)
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    save_model(root / "model.safetensors", model, {"input_size": [64, 32]})
    fs = extract_feature_set(root / "model.safetensors", gallery_records(root / "out"),
                             num_workers=0, progress=False)
    save_features(root / "out" / "gallery.safetensors", fs)
    return {"video": video, "out": root / "out", "model": root / "model.safetensors",
            "gallery": root / "out" / "gallery.safetensors"}


def test_feature_files_carry_the_sightings(footage: dict[str, Path]) -> None:
    fs = load_features(footage["gallery"])
    assert fs.sightings is not None and all(s is not None for s in fs.sightings)
    for i, s in enumerate(fs.sightings):
        assert s.video == str(footage["video"].resolve()) and s.camera == "vtest"
        assert s.tracklet == fs.pids[i] and s.time == pytest.approx(s.frame / 10)
        assert Path(fs.paths[i]).name.startswith(f"{s.tracklet:04d}_c1s1_{s.frame:06d}")
    assert set(fs.cameras) == {"vtest"}
    described = fs.describe(0)
    assert described["frame"] == fs.sightings[0].frame and described["camera"] == "vtest"


def test_time_filter_selects_by_sighting_time(footage: dict[str, Path]) -> None:
    fs = load_features(footage["gallery"])
    mask = fs.select(time_from=0.3, time_to=0.7)
    times = np.array([s.time for s in fs.sightings])
    np.testing.assert_array_equal(mask, (times >= 0.3) & (times <= 0.7))
    dist, idx = search_subset(GalleryIndex(fs.features), fs, fs.features[:1], 1000, mask)
    assert sorted(idx[0].tolist()) == np.flatnonzero(mask).tolist()
    assert np.all(np.diff(dist[0]) >= 0)
    assert fs.select(cameras=["vtest"]).all() and not fs.select(cameras=["other"]).any()


def test_frame_picture_draws_the_box(footage: dict[str, Path]) -> None:
    fs = load_features(footage["gallery"])
    s = fs.sightings[len(fs) // 2]
    picture = np.asarray(frame_picture(s))
    frame = read_frame(s.video, s.frame)[:, :, ::-1]
    assert picture.shape == frame.shape
    x1, y1, x2, y2 = s.box
    assert tuple(picture[(y1 + y2) // 2, x1]) == GREEN  # the box's left edge
    np.testing.assert_array_equal(picture[y1 + 5:y2 - 5, x1 + 5:x2 - 5], frame[y1 + 5:y2 - 5, x1 + 5:x2 - 5])


def test_the_service_shows_where_and_when(footage: dict[str, Path]) -> None:
    client = TestClient(create_app(footage["model"], footage["gallery"], k_default=5))
    fs = load_features(footage["gallery"])
    health = client.get("/health").json()
    times = [s.time for s in fs.sightings]
    assert health["footage"] is True and health["cameras"] == ["vtest"]
    assert health["time_range"] == [min(times), max(times)]
    crop = Path(fs.paths[3]).read_bytes()
    results = client.post("/search", files={"image": ("q.jpg", crop, "image/jpeg")}).json()["results"]
    assert results[0]["id"] == 3 and results[0]["distance"] == pytest.approx(0, abs=1e-3)
    s = fs.sightings[3]
    assert results[0]["sighting"] == {"video": "vtest.avi", "camera": "vtest", "frame": s.frame,
                                      "time": s.time, "box": list(s.box), "score": pytest.approx(s.score),
                                      "tracklet": s.tracklet}
    assert results[0]["camera"] == "vtest" and results[0]["identity"] == f"{s.tracklet:04d}"
    # The same crop's tracklet: its other crops come next (neighbouring frames look alike).
    same = [r for r in results[1:3] if r["sighting"]["tracklet"] == s.tracklet]
    assert same, results
    frame = client.get("/gallery/3/frame")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frame.content)).size == (768, 576)
    late = client.post("/search", params={"time_from": 0.6, "k": len(fs)},
                       files={"image": ("q.jpg", crop, "image/jpeg")}).json()["results"]
    assert late and all(r["sighting"]["time"] >= 0.6 for r in late)
    assert len(late) == sum(t >= 0.6 for t in times)
    bad = client.post("/search", params={"time_from": 2, "time_to": 1},
                      files={"image": ("q.jpg", crop, "image/jpeg")})
    assert bad.status_code == 422 and "is after time_to" in bad.json()["detail"]


def test_the_ingest_command(footage: dict[str, Path], tmp_path: Path) -> None:
    import typer

    from reidkit.footage.cli import ingest_command

    app = typer.Typer()
    app.command()(ingest_command)
    app.command("other")(lambda: None)  # two commands: typer then expects the command's name
    runner = CliRunner()
    result = runner.invoke(app, ["ingest-command", str(footage["video"]), "--out", str(tmp_path / "o"),
                                 "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    assert "vtest" in result.output and "frames/s" in result.output
    assert len(list((tmp_path / "o" / "gallery").glob("*.jpg"))) >= 1
    again = runner.invoke(app, ["ingest-command", str(footage["video"]), "--out", str(tmp_path / "o"),
                                "--max-frames", "3", "--upscale", "2"])
    assert again.exit_code != 0 and "upscale: 1.5 then, 2.0 now" in str(again.exception)
