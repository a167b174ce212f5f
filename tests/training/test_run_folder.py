"""A run folder holds one run; interrupted saves, damaged states and killed runs always resume."""

import json
import os
import pickle
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file
from tiny_training import tiny_pyramid_config

import reidkit.training.base as base
from reidkit.models.io import read_model_meta
from reidkit.training.base import STATE_FILE, ResumeError, RunFolderError, clear_run, run_files
from reidkit.training.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(synth_root):
    return synth_root


def tiny(data_root, out, *extra):
    return tiny_pyramid_config(data_root, out, "train.deterministic=true", *extra)


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    """A finished one-epoch run, written under umask 022."""
    out = tmp_path_factory.mktemp("finished") / "run"
    old = os.umask(0o022)
    try:
        Trainer(tiny(data_root, out, "train.epochs=1")).fit()
    finally:
        os.umask(old)
    return out


def copy_of(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_folder_with_a_run_is_refused_and_clear_run_starts_it_over(data_root, finished, tmp_path):
    tmp_path = copy_of(finished, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="--resume.*--force"):
        Trainer(tiny(data_root, tmp_path, "loss.triplet_margin=0.3"))
    removed = {p.name for p in clear_run(tmp_path)}
    assert {"config.json", "metrics.jsonl", "summary.json", STATE_FILE, "last.safetensors"} <= removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # the user's file stays
    summary = Trainer(tiny(data_root, tmp_path, "train.epochs=1", "loss.triplet_margin=0.3")).fit()
    assert [r["step"] for r in rows(tmp_path) if "id_loss" in r] == [1, 2, 3]  # not appended
    assert summary["steps"] == 3


def test_clear_run_covers_multi_split_folders(tmp_path):
    (tmp_path / "split0").mkdir()
    for name in ("split0/last.safetensors", "split0/.train_state.pt.0123abcd.tmp", "protocol.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "split0x").mkdir()  # not a split folder
    assert [p.name for p in run_files(tmp_path)] == ["protocol.json", "last.safetensors"]
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split0x"]


def test_kill_between_state_and_model_files_resumes_and_writes_them(data_root, tmp_path,
                                                                     monkeypatch):
    real = base.save_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for SIGKILL right after the state was renamed

    monkeypatch.setattr(base, "save_model", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(data_root, tmp_path)).fit()
    # the very first save: the state is there, the model files are not
    assert (tmp_path / STATE_FILE).is_file() and not (tmp_path / "last.safetensors").exists()
    (tmp_path / ".last.safetensors.deadbeef.tmp").write_bytes(b"\0" * 1000)  # a killed write
    monkeypatch.setattr(base, "save_model", real)
    resumed = Trainer(tiny(data_root, tmp_path, "train.epochs=1"), resume=True)
    assert (resumed.epoch, resumed.step) == (1, 3)
    summary = resumed.fit()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _, meta = read_model_meta(tmp_path / "last.safetensors")
    assert (meta["epoch"], meta["step"]) == (1, 3)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    for name, tensor in load_file(tmp_path / "last.safetensors").items():
        assert torch.equal(tensor, state["model"][name]), name
    assert summary["best_epoch"] == 1 and (tmp_path / "best.safetensors").is_file()


def test_resume_before_the_first_checkpoint_starts_from_step_zero(data_root, finished, tmp_path):
    tmp_path = copy_of(finished, tmp_path)
    (tmp_path / STATE_FILE).unlink()  # as if killed during the first epoch
    resumed = Trainer(tiny(data_root, tmp_path, "train.epochs=1"), resume=True)
    assert resumed.step == 0
    resumed.fit()
    assert [r["step"] for r in rows(tmp_path) if "id_loss" in r] == [1, 2, 3]
    with pytest.raises(ResumeError, match="recipe differs.*loss.triplet_margin"):
        Trainer(tiny(data_root, tmp_path, "loss.triplet_margin=0.3"), resume=True)


@pytest.mark.parametrize("damage", ["empty", "truncated", "pickle", "not_a_dict"])
def test_a_damaged_state_is_one_clear_error(data_root, finished, tmp_path, damage):
    tmp_path = copy_of(finished, tmp_path)
    path = tmp_path / STATE_FILE
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "pickle": pickle.dumps(os.system),  # a pickle that would run code
                      "not_a_dict": b""}[damage])
    if damage == "not_a_dict":
        torch.save([1, 2], path)
    with pytest.raises(ResumeError) as info:
        Trainer(tiny(data_root, tmp_path), resume=True)
    message = str(info.value)
    assert str(path) in message and "--force" in message
    assert "weights_only" not in message and "Traceback" not in message


def test_log_after_kill_and_resume_has_each_step_once_and_one_epoch_convention(data_root, finished,
                                                                               tmp_path):
    tmp_path = copy_of(finished, tmp_path)
    seconds = torch.load(tmp_path / STATE_FILE, weights_only=True)["train_seconds"]
    assert seconds > 0
    # what a run killed in its second epoch leaves: rows past the checkpoint, a half line
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 4, "epoch": 2, "id_loss": 1.0}) + "\n" + '{"step": 5, "ep')
    summary = Trainer(tiny(data_root, tmp_path), resume=True).fit()
    records = rows(tmp_path)
    steps = [r for r in records if "id_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in steps] == [1, 1, 1, 2, 2, 2]  # counted from 1, like validation
    vals = [r for r in records if "val_mAP" in r]
    assert [(r["epoch"], r["step"]) for r in vals] == [(1, 3), (2, 6)]
    assert summary["train_seconds"] >= round(seconds, 1)  # the killed part counts too
    assert [v["epoch"] for v in summary["validation"]] == [1, 2]
    assert summary["best_validation"]["epoch"] == summary["best_epoch"]
    assert set(summary["best_validation"]) >= {"val_mAP", "val_rank1"}


def test_files_follow_the_umask(finished):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in finished.iterdir() if p.is_file()}
    assert modes == dict.fromkeys(["config.json", "metrics.jsonl", "summary.json", STATE_FILE,
                                   "last.safetensors", "best.safetensors"], 0o644)


def test_unreadable_training_images_are_skipped_and_counted(data_root, tmp_path):
    from reidkit.data.loader import UnreadableImagesError

    data = shutil.copytree(data_root, tmp_path / "data")
    images = sorted((data / "bounding_box_train").glob("*.jpg"))
    images[0].write_bytes(b"")
    images[5].write_bytes(images[5].read_bytes()[:300])  # truncated
    with pytest.raises(UnreadableImagesError, match="2 image"):
        Trainer(tiny(data, tmp_path / "strict", "train.epochs=1")).fit(strict_images=True)
    summary = Trainer(tiny(data, tmp_path / "run", "train.epochs=1")).fit()
    assert sorted(summary["unreadable_images"]) == sorted([str(images[0]), str(images[5])])
    assert summary["steps"] == 3 and "val_mAP" in summary["best_validation"]
