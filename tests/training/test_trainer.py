"""End-to-end training on a tiny synthetic set: runs, logs, checkpoints, resumes exactly."""

import json

import pytest
import torch
from tiny_training import tiny_pyramid_config

from reidkit.models.io import load_model
from reidkit.training.base import ResumeError, lr_factor
from reidkit.training.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(synth_root):
    return synth_root


def tiny_config(data_root, out, *extra):
    return tiny_pyramid_config(data_root, out, "optim.milestones=[1]", *extra)


def test_training_logs_every_step_and_writes_models(data_root, tmp_path):
    summary = Trainer(tiny_config(data_root, tmp_path)).fit()
    assert summary["steps"] == 6 and summary["epochs"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "id_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    # dynamic.sampler=balanced (the released code, the default): ID-only steps on balanced batches
    assert steps[0]["objective"] == "id" and steps[0]["sampler"] == "balanced"
    assert {"w_id", "w_tp", "lr", "tp_loss"} <= set(steps[0])
    assert steps[3]["lr"] == pytest.approx(steps[0]["lr"] * 0.1)  # milestone at epoch 1
    assert sum("val_mAP" in r for r in records) == 2  # validated after each epoch
    model = load_model(summary["model"], expect={"name": "pyramid", "num_classes": 8})
    assert model(torch.randn(1, 3, 64, 32)).shape == (1, 6 * 128)  # 3 + 2 + 1 branches


def test_resume_continues_exactly(data_root, tmp_path):
    straight = Trainer(tiny_config(data_root, tmp_path / "a"))
    straight.fit()
    first = Trainer(tiny_config(data_root, tmp_path / "b", "train.epochs=1"))
    first.fit()
    resumed = Trainer(tiny_config(data_root, tmp_path / "b"), resume=True)
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit()
    for (name, a), b in zip(straight.bare_model.state_dict().items(),
                            resumed.bare_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()


def test_resume_refuses_a_different_recipe_or_missing_state(data_root, tmp_path):
    with pytest.raises(ResumeError, match="no training state"):
        Trainer(tiny_config(data_root, tmp_path), resume=True)
    Trainer(tiny_config(data_root, tmp_path, "train.epochs=1")).fit()
    with pytest.raises(ResumeError, match="loss.triplet_margin"):
        Trainer(tiny_config(data_root, tmp_path, "loss.triplet_margin=0.3"), resume=True)


def test_lr_factor_warmup_and_steps():
    # 10 iterations per epoch, 2 warm-up epochs from 0.1, x0.5 at epochs 3 and 5
    args = dict(iters_per_epoch=10, warmup_epochs=2, warmup_factor=0.1, milestones=[3, 5], gamma=0.5)
    assert lr_factor(0, **args) == pytest.approx(0.1)
    assert lr_factor(10, **args) == pytest.approx(0.55)
    assert lr_factor(20, **args) == 1.0
    assert lr_factor(30, **args) == 0.5
    assert lr_factor(49, **args) == 0.5
    assert lr_factor(50, **args) == 0.25


def test_triplet_per_branch_sums_the_branch_losses(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path, "loss.triplet_on=branches"))
    torch.manual_seed(0)
    feats = torch.randn(8, 6 * 128)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    result = trainer._triplet(feats, pids)
    expected = sum(trainer.triplet(f, pids).loss for f in feats.split(128, dim=1))
    torch.testing.assert_close(result.loss, expected)
    assert result.num_valid == 8
    whole = trainer.triplet(feats, pids).loss
    assert not torch.isclose(result.loss, whole)  # a different objective from the concatenation
