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
