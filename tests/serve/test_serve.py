"""The search service: answers against a model run by hand, and 4xx for every kind of bad input."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the search service needs the 'serve' extra")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from reidkit.data import load_dataset  # noqa: E402
from reidkit.data.image import read_image  # noqa: E402
from reidkit.data.synthetic import generate  # noqa: E402
from reidkit.data.transforms import build_transforms  # noqa: E402
from reidkit.models import build_model  # noqa: E402
from reidkit.models.io import CheckpointError, save_model  # noqa: E402
from reidkit.retrieval.features import (  # noqa: E402
    FeatureSet,
    UnknownModelError,
    UnknownModelWarning,
    extract_feature_set,
    load_features,
    save_features,
)
from reidkit.serve import create_app  # noqa: E402

HEIGHT, WIDTH = 64, 32


def build_service_files(root: Path) -> dict[str, Path]:
    """A tiny Pyramid model and the query / gallery features of a tiny synthetic data set."""
    generate(root / "data", preset="tiny")
    data = load_dataset("market1501", root / "data")
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    files = {"checkpoint": root / "model.safetensors"}
    save_model(files["checkpoint"], model, {"input_size": [HEIGHT, WIDTH]})
    for name, records in (("query", data.query), ("gallery", data.gallery)):
        files[name] = root / f"{name}.npz"
        save_features(files[name], extract_feature_set(files["checkpoint"], records, batch_size=32,
                                                       num_workers=0, progress=False))
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_service_files(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def sets(files: dict[str, Path]) -> dict[str, FeatureSet]:
    return {name: load_features(files[name]) for name in ("query", "gallery")}


@pytest.fixture(scope="module")
def client(files: dict[str, Path]) -> TestClient:
    app = create_app(files["checkpoint"], files["gallery"], query_features=files["query"],
                     k_default=5, max_upload_bytes=200_000)
    return TestClient(app)


def reference_ranking(query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances from one query to every gallery feature, and the order nearest first."""
    dist = np.sqrt(((gallery.astype(np.float64) - query.astype(np.float64)) ** 2).sum(axis=1))
    return dist, np.argsort(dist, kind="stable")


def hand_feature(checkpoint: Path, image_path: str) -> np.ndarray:
    """The feature of one image file, computed without the service."""
    from reidkit.models.io import load_model

    model = load_model(checkpoint)
    image = build_transforms(HEIGHT, WIDTH, train=False)(read_image(image_path))
    with torch.inference_mode():
        return model(image.unsqueeze(0)).numpy()[0]


def upload(client: TestClient, data: bytes, k: int | str | None = None, name: str = "q.jpg"):
    params = {} if k is None else {"k": k}
    return client.post("/search", params=params, files={"image": (name, data, "image/jpeg")})


def valid_upload(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    """The service still answers a good request correctly (run after every bad one)."""
    response = upload(client, Path(sets["gallery"].paths[2]).read_bytes(), k=3)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == 2


def test_health(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["gallery_size"] == len(sets["gallery"].paths) > 5
    assert body["query_size"] == len(sets["query"].paths) > 0
    assert body["model"] == "pyramid"
    assert body["feature_dim"] == sets["gallery"].features.shape[1] == 6 * 128  # 3+2+1 branches
    assert body["input_size"] == [HEIGHT, WIDTH]
    assert body["max_k"] == len(sets["gallery"].paths)


def test_upload_ranks_like_a_hand_computed_search(client: TestClient, files: dict[str, Path],
                                                  sets: dict[str, FeatureSet]) -> None:
    gallery = sets["gallery"]
    image_path = sets["query"].paths[0]
    dist, order = reference_ranking(hand_feature(files["checkpoint"], image_path), gallery.features)
    response = upload(client, Path(image_path).read_bytes(), k=4)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == order[:4].tolist()
    np.testing.assert_allclose([r["distance"] for r in results], dist[order[:4]], rtol=1e-4, atol=1e-4)
    for r in results:
        assert r["path"] == gallery.paths[r["id"]]
        assert (r["pid"], r["camid"]) == (int(gallery.pids[r["id"]]), int(gallery.camids[r["id"]]))


def test_uploading_a_gallery_image_finds_itself_first(client: TestClient,
                                                      sets: dict[str, FeatureSet]) -> None:
    for i in (0, len(sets["gallery"].paths) - 1):
        results = upload(client, Path(sets["gallery"].paths[i]).read_bytes()).json()["results"]
        assert len(results) == 5  # k_default
        assert results[0]["id"] == i
        assert results[0]["distance"] == pytest.approx(0.0, abs=1e-3)
        assert results[1]["distance"] > 1e-2


def test_png_upload_and_k_up_to_the_gallery_size(client: TestClient,
                                                  sets: dict[str, FeatureSet]) -> None:
    buffer = io.BytesIO()
    read_image(sets["gallery"].paths[1]).save(buffer, format="PNG")
    n = len(sets["gallery"].paths)
    results = upload(client, buffer.getvalue(), k=n, name="q.png").json()["results"]
    assert results[0]["id"] == 1
    assert sorted(r["id"] for r in results) == list(range(n))
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)


def test_search_with_a_stored_query(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    query, gallery = sets["query"], sets["gallery"]
    qid = len(query.paths) - 1
    dist, order = reference_ranking(query.features[qid], gallery.features)
    body = client.post(f"/search/query/{qid}", params={"k": 3}).json()
    assert body["query"] == {"id": qid, "pid": int(query.pids[qid]), "camid": int(query.camids[qid]),
                             "camera": str(int(query.camids[qid]) + 1),
                             "identity": str(int(query.pids[qid])), "sighting": None}
    assert [r["id"] for r in body["results"]] == order[:3].tolist()
    np.testing.assert_allclose([r["distance"] for r in body["results"]], dist[order[:3]],
                               rtol=1e-4, atol=1e-4)


def test_queries_and_images_are_served_by_index(client: TestClient,
                                                sets: dict[str, FeatureSet]) -> None:
    query, gallery = sets["query"], sets["gallery"]
    listed = client.get("/queries").json()["queries"]
    assert [(q["id"], q["pid"], q["camid"]) for q in listed] == [
        (i, int(p), int(c)) for i, (p, c) in enumerate(zip(query.pids, query.camids, strict=True))]
    for kind, fs in (("gallery", gallery), ("query", query)):
        last = len(fs.paths) - 1
        response = client.get(f"/{kind}/{last}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == Path(fs.paths[last]).read_bytes()


def test_openapi_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/search", "/search/query/{query_id}", "/queries", "/gallery/{gallery_id}",
            "/query/{query_id}"} <= set(paths)
    assert "post" in paths["/search"] and "get" in paths["/gallery/{gallery_id}"]
    assert "k" in [p["name"] for p in paths["/search"]["post"]["parameters"]]


def test_page_and_its_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200


def _truncated_jpeg(path: str) -> bytes:
    data = Path(path).read_bytes()
    return data[: len(data) // 2]


def _huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, format="PNG")  # 25 Mpx, a few KB compressed
    return buffer.getvalue()


@pytest.mark.parametrize(("make", "status", "words"), [
    (lambda g: b"just some text, renamed to .jpg\n", 422, "not an image"),
    (lambda g: b"", 422, "empty"),
    (lambda g: _truncated_jpeg(g.paths[0]), 422, "truncated"),
    (lambda g: b"\xff" * 200_001, 413, "200,000 byte limit"),
    (lambda g: _huge_png(), 413, "pixel limit"),
], ids=["text", "empty", "truncated-jpeg", "oversized", "decompression-bomb"])
def test_bad_uploads_get_a_clear_4xx(client: TestClient, sets: dict[str, FeatureSet], make, status,
                                     words) -> None:
    response = upload(client, make(sets["gallery"]))
    assert response.status_code == status
    assert words in response.json()["detail"]
    valid_upload(client, sets)


def test_a_body_far_over_the_limit_is_refused_before_parsing(client: TestClient,
                                                             sets: dict[str, FeatureSet]) -> None:
    response = upload(client, b"\0" * 2_000_000)
    assert response.status_code == 413
    assert "byte limit" in response.json()["detail"]
    valid_upload(client, sets)


@pytest.mark.parametrize("k", [0, -1, 10_000, "abc"])
def test_k_out_of_range_is_422(client: TestClient, sets: dict[str, FeatureSet], k) -> None:
    image = Path(sets["gallery"].paths[0]).read_bytes()
    for response in (upload(client, image, k=k), client.post("/search/query/0", params={"k": k})):
        assert response.status_code == 422
        assert response.json()["detail"].startswith("k: ")
    valid_upload(client, sets)


def test_missing_image_field_is_422(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    response = client.post("/search", files={"picture": ("q.jpg", b"x", "image/jpeg")})
    assert response.status_code == 422
    assert response.json()["detail"] == "image: Field required"
    valid_upload(client, sets)


@pytest.mark.parametrize(("url", "status"), [
    ("/gallery/999999", 404), ("/query/999999", 404), ("/gallery/-1", 422), ("/gallery/abc", 422),
    ("/gallery/1.5", 422), ("/search/query/999999", 404),
])
def test_unknown_ids(client: TestClient, sets: dict[str, FeatureSet], url: str, status: int) -> None:
    response = client.post(url) if url.startswith("/search") else client.get(url)
    assert response.status_code == status
    assert response.json()["detail"]
    valid_upload(client, sets)


@pytest.mark.parametrize("url", [
    "/gallery/../../etc/passwd", "/gallery/%2e%2e/%2e%2e/etc/passwd", "/gallery/%2e%2e",
    "/gallery/..%2f..%2fetc%2fpasswd", "/query/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2fapp.py",
])
def test_path_traversal_is_refused(client: TestClient, sets: dict[str, FeatureSet], url: str) -> None:
    response = client.get(url)
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content and b"import" not in response.content
    valid_upload(client, sets)


def test_concurrent_searches_agree(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    image = Path(sets["query"].paths[0]).read_bytes()
    expected = upload(client, image).json()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: upload(client, image).json(), range(8)))
    assert all(answer == expected for answer in answers)


def test_without_a_query_set(files: dict[str, Path], sets: dict[str, FeatureSet]) -> None:
    client = TestClient(create_app(files["checkpoint"], files["gallery"]))
    assert client.get("/health").json()["query_size"] == 0
    for response in (client.get("/queries"), client.get("/query/0"), client.post("/search/query/0")):
        assert response.status_code == 404
        assert "--query" in response.json()["detail"]
    assert len(upload(client, Path(sets["gallery"].paths[0]).read_bytes()).json()["results"]) == 10


@pytest.mark.filterwarnings("ignore::reidkit.retrieval.features.UnknownModelWarning")
def test_start_up_errors_name_the_fix(files: dict[str, Path], sets: dict[str, FeatureSet],
                                      tmp_path: Path) -> None:
    g, q = sets["gallery"], sets["query"]

    def features(name: str, fs: FeatureSet, **meta) -> Path:
        save_features(tmp_path / name, FeatureSet(fs.features, fs.paths, fs.pids, fs.camids, meta))
        return tmp_path / name

    with pytest.raises(ValueError, match="k_default must be between 1 and"):
        create_app(files["checkpoint"], files["gallery"], k_default=len(g) + 1)
    empty = FeatureSet(g.features[:0], [], g.pids[:0], g.camids[:0], g.meta)
    save_features(tmp_path / "empty.npz", empty)
    with pytest.raises(ValueError, match="holds no images; extract one") as caught:
        create_app(files["checkpoint"], tmp_path / "empty.npz")
    assert "k_default" not in str(caught.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        create_app(tmp_path / "missing.safetensors", files["gallery"])
    with pytest.raises(ValueError, match="extracted differently"):
        create_app(files["checkpoint"], files["gallery"],
                   query_features=features("q.npz", q, **{**q.meta, "flip": True}))
    other = tmp_path / "other.safetensors"
    save_model(other, build_model("baseline", num_classes=5, backbone="resnet18"))
    with pytest.raises(ValueError, match="extracted with another model file"):
        create_app(other, files["gallery"], input_size=(HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="extract the gallery with this checkpoint"):
        create_app(other, features("g.npz", g), input_size=(HEIGHT, WIDTH), allow_unknown_model=True)
    pyramid = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    save_model(other, pyramid, {"input_size": [128, 64]})
    with pytest.raises(ValueError, match="disagree on the input size"):
        create_app(other, features("g.npz", g, input_size=[HEIGHT, WIDTH]), allow_unknown_model=True)
    save_model(other, pyramid)
    with pytest.raises(ValueError, match=r"pass input_size=\(height, width\)"):
        create_app(other, features("g.npz", g), allow_unknown_model=True)


def test_an_internal_failure_is_a_json_500_and_the_service_recovers(
        client: TestClient, sets: dict[str, FeatureSet], monkeypatch: pytest.MonkeyPatch) -> None:
    engine = client.app.state.engine

    def broken(image):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(engine, "embed", broken)
    response = upload(TestClient(client.app, raise_server_exceptions=False),
                      Path(sets["gallery"].paths[0]).read_bytes())
    assert response.status_code == 500
    assert response.json() == {"detail": "the server failed to answer this request; see its log"}
    monkeypatch.undo()
    valid_upload(client, sets)


def test_features_without_model_metadata_are_refused(files: dict[str, Path], sets: dict[str, FeatureSet],
                                                     tmp_path: Path) -> None:
    # Issue 13 item 11: such a gallery was served with no word about its unchecked model.
    g = sets["gallery"]
    save_features(tmp_path / "g.npz", FeatureSet(g.features, g.paths, g.pids, g.camids, {}))
    with pytest.raises(UnknownModelError, match=r"g\.npz does not record the model.*--allow-unknown-model"):
        create_app(files["checkpoint"], tmp_path / "g.npz")
    with pytest.warns(UnknownModelWarning):
        app = create_app(files["checkpoint"], tmp_path / "g.npz", allow_unknown_model=True)
    assert TestClient(app).get("/health").json()["gallery_size"] == len(g)


def test_cameras_and_people_carry_the_data_sets_names(client: TestClient,
                                                      sets: dict[str, FeatureSet]) -> None:
    # Issue 13 item 12: the service said "camera 2" for a _c3 file (0-based camid).
    gallery = sets["gallery"]
    results = upload(client, Path(gallery.paths[0]).read_bytes(), k=len(gallery)).json()["results"]
    for r in results:
        name = Path(gallery.paths[r["id"]]).name  # like 0006_c3s1_000123_00.jpg
        assert r["camera"] == name.split("_")[1][1] == str(r["camid"] + 1)
        assert r["identity"] == str(int(name.split("_")[0])) == str(r["pid"])
    assert client.get("/health").json()["cameras"] == sorted({r["camera"] for r in results})
    listed = client.get("/queries").json()["queries"]
    assert all(q["camera"] == str(q["camid"] + 1) for q in listed)


def test_camera_filter(client: TestClient, sets: dict[str, FeatureSet]) -> None:
    gallery = sets["gallery"]
    cameras = client.get("/health").json()["cameras"]
    wanted = cameras[:2]
    response = client.post("/search/query/0", params={"k": len(gallery), "camera": wanted})
    results = response.json()["results"]
    expected = [i for i in range(len(gallery)) if gallery.camera_label(i) in wanted]
    assert sorted(r["id"] for r in results) == expected
    _, order = reference_ranking(sets["query"].features[0], gallery.features[expected])
    assert [r["id"] for r in results] == [expected[i] for i in order]
    bad = client.post("/search/query/0", params={"camera": "c99"})
    assert bad.status_code == 422 and "no gallery camera is named c99" in bad.json()["detail"]
    no_time = client.post("/search/query/0", params={"time_from": 1})
    assert no_time.status_code == 422 and "no crops from video" in no_time.json()["detail"]
    assert client.get("/gallery/0/frame").status_code == 404


def test_favicon_and_offline_docs(client: TestClient) -> None:
    # Issue 13 item 14: /favicon.ico was a 404 and /docs loaded Swagger UI from a CDN.
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "http://" not in docs.text and "https://" not in docs.text
    for asset in ("/docs-static/swagger-ui-bundle.js", "/docs-static/swagger-ui.css"):
        assert asset in docs.text
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000


def test_a_sighting_is_answered_with_the_videos_file_name():
    import json

    from reidkit.data.dataset import Sighting
    from reidkit.retrieval.features import FeatureSet
    from reidkit.serve.app import SearchResult, _describe

    seen = Sighting(video="/data/footage/cam1.avi", camera="cam1", frame=12, time=1.2,
                    box=(3, 4, 40, 90), score=0.875, tracklet=5)
    fs = FeatureSet(np.zeros((1, 4), np.float32), ["crop.jpg"], np.array([-1]), np.array([0]), {},
                    sightings=[seen])
    answer = SearchResult(id=0, path="crop.jpg", distance=0.5, **_describe(fs, 0))
    assert json.loads(answer.model_dump_json())["sighting"] == {
        "video": "cam1.avi", "camera": "cam1", "frame": 12, "time": 1.2, "box": [3, 4, 40, 90],
        "score": 0.875, "tracklet": 5}
