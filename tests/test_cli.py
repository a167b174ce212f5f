import numpy as np
import pytest
from typer.testing import CliRunner

from reidkit.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "demo", "datasets"):
        assert command in result.output


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["demo"], ["datasets", "synth"],
                                     ["datasets", "stats"], ["datasets", "list"]])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_datasets_list_and_stats_of_a_synthetic_set(tmp_path):
    listed = runner.invoke(app, ["datasets", "list"])
    assert {"market1501", "dukemtmcreid", "cuhk03", "msmt17", "viper"} <= set(listed.output.split())
    made = runner.invoke(app, ["datasets", "synth", "--out", str(tmp_path), "--preset", "tiny"])
    assert made.exit_code == 0, made.output
    stats = runner.invoke(app, ["datasets", "stats", str(tmp_path), "--name", "market1501"])
    assert stats.exit_code == 0, stats.output
    assert "train" in stats.output and "gallery" in stats.output


def test_stats_of_a_missing_folder_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["datasets", "stats", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "error:" in result.output and "bounding_box_train" in result.output


def test_evaluate_a_saved_distance_matrix(tmp_path):
    # 2 queries, 3 gallery items; query 0 finds its match at rank 1, query 1 at rank 2
    path = tmp_path / "d.npz"
    np.savez(path, distmat=np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.3]]),
             q_pids=np.array([1, 2]), g_pids=np.array([1, 3, 2]),
             q_camids=np.array([0, 0]), g_camids=np.array([1, 1, 1]))
    result = runner.invoke(app, ["evaluate", "--distmat", str(path), "--max-rank", "3"])
    assert result.exit_code == 0, result.output
    # mAP = (1 + 1/2) / 2 = 75.0; rank-1 = 50.0
    assert "75.0" in result.output and "50.0" in result.output


def test_evaluate_reports_missing_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, distmat=np.zeros((1, 1)))
    result = runner.invoke(app, ["evaluate", "--distmat", str(path)])
    assert result.exit_code == 2 and "lacks arrays" in result.output


def test_train_rejects_a_bad_override_without_a_traceback():
    result = runner.invoke(app, ["train", "train.epoch=3"])
    assert result.exit_code == 2
    assert "train.epoch" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    import torch

    from reidkit.data.synthetic import generate
    from reidkit.models import build_model
    from reidkit.models.io import save_model

    root = tmp_path_factory.mktemp("cli")
    generate(root / "data", preset="tiny", seed=3)
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=4, backbone="resnet18", num_stripes=3)
    save_model(root / "model.safetensors", model,
               {"input_size": [64, 32], "epoch": 7, "step": 70, "dataset": "market1501",
                "val_mAP": 0.5, "val_rank1": 0.625})
    return root


@pytest.fixture(scope="module")
def gallery_file(model_and_data):
    root = model_and_data
    out = root / "fixture_gallery.safetensors"
    made = runner.invoke(app, ["extract", "--checkpoint", str(root / "model.safetensors"),
                               "--dataset", "market1501", "--root", str(root / "data"),
                               "--out", str(out)])
    assert made.exit_code == 0, made.output
    return out


def test_extract_evaluate_rerank_visualize_search(model_and_data):
    root = model_and_data
    model, data = str(root / "model.safetensors"), str(root / "data")
    for subset, suffix in (("query", "npz"), ("gallery", "safetensors")):
        made = runner.invoke(app, ["extract", "--checkpoint", model, "--dataset", "market1501",
                                   "--root", data, "--subset", subset,
                                   "--out", str(root / f"{subset}.{suffix}")])
        assert made.exit_code == 0, made.output
    q, g = str(root / "query.npz"), str(root / "gallery.safetensors")
    plain = runner.invoke(app, ["evaluate", "--query", q, "--gallery", g, "--max-rank", "5"])
    assert plain.exit_code == 0, plain.output
    assert "valid queries" in plain.output
    reranked = runner.invoke(app, ["rerank", "--query", q, "--gallery", g, "--k1", "4", "--k2", "2",
                                   "--out", str(root / "rr.npz")])
    assert reranked.exit_code == 0, reranked.output
    with np.load(root / "rr.npz") as rr:
        assert rr["distmat"].shape[0] == len(np.load(root / "query.npz")["pids"])
    pictures = runner.invoke(app, ["visualize", "--query", q, "--gallery", g, "--out",
                                   str(root / "pics"), "--num", "2", "--topk", "3"])
    assert pictures.exit_code == 0, pictures.output
    assert sorted(p.name for p in (root / "pics").iterdir()) == ["cmc.png", "ranked_000.png",
                                                                  "ranked_001.png"]
    query_image = next((root / "data" / "query").glob("*.jpg"))
    found = runner.invoke(app, ["search", "--gallery", g, "--checkpoint", model, "--query",
                                str(query_image), "--topk", "3", "--json", str(root / "hits.json")])
    assert found.exit_code == 0, found.output
    hits = __import__("json").loads((root / "hits.json").read_text())[str(query_image)]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]


def test_search_refuses_a_gallery_from_another_model(model_and_data, gallery_file, tmp_path):
    import torch

    from reidkit.models import build_model
    from reidkit.models.io import save_model

    root = model_and_data
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_model(other, build_model("pyramid", num_classes=4, backbone="resnet18", num_stripes=3),
               {"input_size": [64, 32]})
    query_image = next((root / "data" / "query").glob("*.jpg"))
    result = runner.invoke(app, ["search", "--gallery", str(gallery_file), "--checkpoint", str(other),
                                 "--query", str(query_image)])
    assert result.exit_code == 2 and "extracted differently" in result.output


# --------------------------------------------------------------------------- issue 13: errors
def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_version():
    from reidkit import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"reidkit {__version__}"


def test_train_help_lists_the_recipes():
    result = runner.invoke(app, ["train", "--help"], terminal_width=400)
    assert "pyramid_market1501_r50" in result.output and "mtdnet_viper" in result.output


def test_unknown_device_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["train", "--config", "demo_cpu", "train.device=tpu",
                                 f"train.output_dir={tmp_path}"])
    one_line_error(result, "train.device=tpu is not a device")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_extract_on_missing_cuda_is_refused_before_work(model_and_data, tmp_path):
    result = runner.invoke(app, ["extract", "--checkpoint", str(model_and_data / "model.safetensors"),
                                 "--images", str(model_and_data / "data" / "query"), "--device",
                                 "cuda", "--out", str(tmp_path / "g.npz")])
    one_line_error(result, "--device=cuda but CUDA is not available")


def test_options_are_checked_before_the_work(tmp_path):
    # the checkpoint does not exist: the suffix must be refused before anything is read
    result = runner.invoke(app, ["extract", "--checkpoint", str(tmp_path / "none.safetensors"),
                                 "--images", str(tmp_path), "--out", str(tmp_path / "g.txt")])
    assert result.exit_code == 2 and "feature files end in" in result.output
    result = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "none.safetensors"),
                                 "--onnx", str(tmp_path / "m.onnx"), "--atol", "-1"])
    assert result.exit_code == 2 and "--atol" in result.output
    result = runner.invoke(app, ["serve", "--checkpoint", "m.safetensors", "--gallery", "g.npz",
                                 "--port", "99999"])
    assert result.exit_code == 2 and "--port" in result.output and "Traceback" not in result.output
    (tmp_path / "taken.txt").write_text("x")
    result = runner.invoke(app, ["datasets", "synth", "--out", str(tmp_path), "--preset", "tiny"])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]


@pytest.mark.parametrize(("content", "expected"), [
    ("text", "is not an .npz archive"),
    ("strings", "q_pids holds <U1; every array must hold numbers"),
])
def test_bad_distance_files_are_named_truly(tmp_path, content, expected):
    path = tmp_path / "d.npz"
    if content == "text":
        path.write_text("0.1 0.2\n0.3 0.4\n")
    else:
        np.savez(path, distmat=np.zeros((1, 1)), q_pids=np.array(["a"]), g_pids=np.array([1]),
                 q_camids=np.array([0]), g_camids=np.array([1]))
    result = runner.invoke(app, ["evaluate", "--distmat", str(path)])
    one_line_error(result, expected)
    assert "pickled" not in result.output


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch):
    from reidkit.data.datasets import DatasetLayoutError

    result = runner.invoke(app, ["--debug", "datasets", "stats", str(tmp_path / "nothing")])
    assert isinstance(result.exception, DatasetLayoutError)  # raised: typer prints its traceback
    import reidkit.data

    def bug(*args, **kwargs):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr(reidkit.data, "load_dataset", bug)
    result = runner.invoke(app, ["datasets", "stats", str(tmp_path)])
    assert isinstance(result.exception, ValueError) and result.exit_code == 1


# --------------------------------------------------------------------------- issue 13: scripting
def test_json_dash_goes_to_standard_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.npz"
    np.savez(path, distmat=np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.3]]),
             q_pids=np.array([1, 2]), g_pids=np.array([1, 3, 2]),
             q_camids=np.array([0, 0]), g_camids=np.array([1, 1, 1]))
    result = runner.invoke(app, ["evaluate", "--distmat", str(path), "--max-rank", "3", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = __import__("json").loads(result.stdout)
    assert data["mAP"] == 0.75 and data["cmc"] == [0.5, 1.0, 1.0]
    assert not (tmp_path / "-").exists()
    made = runner.invoke(app, ["datasets", "synth", "--out", str(tmp_path / "s"), "--preset", "tiny"])
    assert made.exit_code == 0
    stats = runner.invoke(app, ["datasets", "stats", str(tmp_path / "s"), "--json", "-"])
    data = __import__("json").loads(stats.stdout)
    assert set(data["subsets"]) == {"train", "query", "gallery"}


def test_info_describes_a_model_file(model_and_data):
    path = str(model_and_data / "model.safetensors")
    shown = runner.invoke(app, ["info", path], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    for fragment in ("pyramid", "backbone=resnet18", "64x32, bilinear resize", "ImageNet mean/std",
                     "embedding (768-d features)", "epoch 7, step 70", "market1501",
                     "mAP 50.0%", "rank1 62.5%"):
        assert fragment in shown.output, shown.output
    data = __import__("json").loads(runner.invoke(app, ["info", path, "--json", "-"]).stdout)
    assert data["model"] == "pyramid" and data["validation"] == {"mAP": 0.5, "rank1": 0.625}
    assert data["spec"]["input_size"] == [64, 32] and data["spec"]["part_dim"] == 128
    one_line_error(runner.invoke(app, ["info", str(model_and_data / "data" / "meta.json")]),
                   "is not a reidkit model file")


def test_search_a_folder_of_queries_as_json(model_and_data, gallery_file):
    folder = model_and_data / "data" / "query"
    result = runner.invoke(app, ["search", "--gallery", str(gallery_file), "--checkpoint",
                                 str(model_and_data / "model.safetensors"), "--query", str(folder),
                                 "--topk", "2", "--json", "-"])
    assert result.exit_code == 0, result.output
    hits = __import__("json").loads(result.stdout)
    assert sorted(hits) == sorted(str(p) for p in folder.glob("*.jpg"))
    assert all([h["rank"] for h in v] == [1, 2] for v in hits.values())


def test_search_refuses_nan_features(model_and_data, gallery_file, tmp_path):
    from reidkit.retrieval.features import load_features, save_features

    fs = load_features(gallery_file)
    fs.features[1, 0] = np.nan
    save_features(tmp_path / "nan.safetensors", fs)
    query_image = next((model_and_data / "data" / "query").glob("*.jpg"))
    result = runner.invoke(app, ["search", "--gallery", str(tmp_path / "nan.safetensors"),
                                 "--checkpoint", str(model_and_data / "model.safetensors"),
                                 "--query", str(query_image), "--json", "-"])
    one_line_error(result, "NaN or infinite features for 1 image")


# --------------------------------------------------------------------------- issue 13: bad images
def test_unreadable_images_are_reported_and_skipped(model_and_data, tmp_path, monkeypatch):
    import shutil

    from PIL import Image

    from reidkit.retrieval.features import load_features

    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted((model_and_data / "data" / "query").glob("*.jpg"))[:3]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "0099_c1_empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "0098_c1_truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (200, 200)).save(folder / "0097_c1_huge.png")
    (folder / "-1_c1_junk.jpg").write_bytes(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 is "huge", 128x64 is not
    args = ["extract", "--checkpoint", str(model_and_data / "model.safetensors"), "--images",
            str(folder), "--out", str(tmp_path / "g.npz")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("0099_c1_empty.jpg", "0098_c1_truncated.jpg", "0097_c1_huge.png"):
        assert f"unreadable image {folder / name}" in result.output
    assert "skipped 3 unreadable image(s)" in result.output
    assert "dropped 1 junk image(s)" in result.output  # named, not silently dropped
    fs = load_features(tmp_path / "g.npz")
    assert sorted(fs.paths) == sorted(str(folder / p.name) for p in good)
    strict = runner.invoke(app, [*args[:-1], str(tmp_path / "strict.npz"), "--strict"])
    one_line_error(strict, "3 image(s) cannot be read")
    assert not (tmp_path / "strict.npz").exists()


def test_a_huge_learning_rate_is_a_user_error(model_and_data, tmp_path):
    result = runner.invoke(app, ["train", "--config", "demo_cpu", f"train.output_dir={tmp_path}",
                                 "optim.lr=1e308"])
    one_line_error(result, "optim.lr")
    # below the bound a run can still diverge: that is one line naming the fix too
    from types import SimpleNamespace

    import torch

    from reidkit.errors import ReidkitError
    from reidkit.training.base import TrainerBase

    with pytest.raises(ReidkitError, match="the loss became nan at step 5; lower optim.lr"):
        TrainerBase.optimizer_step(SimpleNamespace(step=4), torch.tensor(float("nan")))


def test_stats_of_identity_folders_with_a_carved_test_split(tmp_path):
    for person, n in (("ann", 3), ("ben", 2), ("cat", 2)):
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{i}_c{i + 1}.jpg").touch()
    result = runner.invoke(app, ["datasets", "stats", str(tmp_path), "--name", "folder",
                                 "-o", "test_ids=1", "--json", "-"])
    assert result.exit_code == 0, result.output
    subsets = __import__("json").loads(result.stdout)["subsets"]
    assert subsets["train"]["ids"] == 2 and subsets["query"] == {"ids": 1, "images": 1, "cams": 1}
    one_line_error(runner.invoke(app, ["datasets", "stats", str(tmp_path), "--name", "folder",
                                       "-o", "splits=2"]), "has no option splits")


def test_index_command_saves_the_index_next_to_the_gallery(model_and_data, gallery_file, tmp_path):
    import shutil

    from reidkit.retrieval.features import load_features
    from reidkit.retrieval.search import load_index_for

    gallery = tmp_path / gallery_file.name
    shutil.copy(gallery_file, gallery)
    made = runner.invoke(app, ["index", "--gallery", str(gallery), "--spec", "IVF{nlist},Flat"])
    assert made.exit_code == 0, made.output
    g = load_features(gallery)
    assert f"wrote {gallery}.faiss: {len(g):,} items" in made.output
    index = load_index_for(gallery, len(g), g.dim, g.meta.get("metric", "euclidean"))
    assert index is not None and index.nprobe == 32


def test_evaluate_a_pair_model_ranks_by_its_pair_scores(model_and_data, tmp_path):
    """``evaluate --checkpoint`` of an MTDnet 'mtd' model scores query-gallery pairs, as its spec
    says, and gives what evaluate_model gives; feature-only options are refused for it."""
    import json

    import torch

    from reidkit.data import load_dataset
    from reidkit.models.io import load_model, save_model
    from reidkit.models.mtdnet import MTDNet
    from reidkit.retrieval.evaluate import evaluate_model

    torch.manual_seed(0)
    save_model(tmp_path / "mtd.safetensors",
               MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=64, rank_dim=16))
    data = str(model_and_data / "data")
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "mtd.safetensors"),
                                 "--root", data, "--json", "-"])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "mtd.safetensors")
    assert model.spec.ranks_by == "pairs"
    dataset = load_dataset("market1501", data)
    by_pairs = evaluate_model(model, dataset)
    assert json.loads(result.stdout)["mAP"] == pytest.approx(by_pairs.mAP, abs=1e-6)
    by_embedding = evaluate_model(model, dataset, ranks_by="embedding")
    assert by_pairs.mAP != by_embedding.mAP  # two rankings: the CLI took the model's own
    # re-ranking works on features: the mtd model's embedding (MTDtrp), none for verification only
    reranked = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "mtd.safetensors"),
                                   "--root", data, "--rerank", "--json", "-"])
    assert reranked.exit_code == 0, reranked.output
    assert "ranked by its pair scores" in reranked.stderr  # the user is told which ranking
    save_model(tmp_path / "cls.safetensors",
               MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=64, variant="cls"))
    refused = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "cls.safetensors"),
                                  "--root", data, "--rerank"])
    one_line_error(refused, "has no embedding", "--rerank and --metric need features")
