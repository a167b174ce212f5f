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
    save_model(root / "model.safetensors", model, {"input_size": [64, 32]})
    return root


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
    assert plain.exit_code == 0, plain.output and "valid queries" in plain.output
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


def test_search_refuses_a_gallery_from_another_model(model_and_data, tmp_path):
    import torch

    from reidkit.models import build_model
    from reidkit.models.io import save_model

    root = model_and_data
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_model(other, build_model("pyramid", num_classes=4, backbone="resnet18", num_stripes=3),
               {"input_size": [64, 32]})
    query_image = next((root / "data" / "query").glob("*.jpg"))
    gallery = root / "gallery.safetensors"
    if not gallery.exists():
        pytest.skip("needs the extraction test's gallery file")
    result = runner.invoke(app, ["search", "--gallery", str(gallery), "--checkpoint", str(other),
                                 "--query", str(query_image)])
    assert result.exit_code == 2 and "extracted differently" in result.output
