"""The trainer's dynamic wiring: which batches feed the triplet average in each sampler mode."""

import pytest
import torch
from tiny_training import tiny_pyramid_config

from reidkit.training.dynamic import DynamicLossScheduler
from reidkit.training.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(synth_root):
    return synth_root


def trainer(data_root, out, *extra) -> Trainer:
    return Trainer(tiny_pyramid_config(data_root, out, "data.val_ids=0", "dynamic.alpha=0.5", *extra))


def replay(records: list[dict], **settings) -> list[tuple[str, str]]:
    """The decisions a fresh scheduler makes when fed the values the trainer logged."""
    scheduler = DynamicLossScheduler(**settings)
    decisions = []
    for r in records:
        decisions.append((scheduler.decision.objective, scheduler.decision.sampler))
        scheduler.update(r["id_loss"], r["tp_loss"])
    return decisions


def ema(values: list[float], alpha: float) -> float:
    k = values[0]
    for v in values[1:]:
        k = alpha * v + (1 - alpha) * k
    return k


def test_switch_feeds_the_triplet_average_from_balanced_batches_only(data_root, tmp_path):
    # delta huge: once both FL exist a step is ID alone on a random batch unless FL_id is 0
    t = trainer(data_root, tmp_path, "dynamic.sampler=switch", "dynamic.delta=1e9")
    records = [t.train_step() for _ in range(10)]
    samplers = [r["sampler"] for r in records]
    assert samplers[:2] == ["balanced", "balanced"]  # warm-up: the triplet task's first values
    assert "random" in samplers
    assert all(r["tp_loss"] is None for r in records if r["sampler"] == "random")
    assert all(r["tp_loss"] is not None for r in records if r["sampler"] == "balanced")
    assert all(r["objective"] == "id" for r in records if r["sampler"] == "random")
    settings = dict(alpha=0.5, delta=1e9, combine="sum", sampler="switch")
    assert [(r["objective"], r["sampler"]) for r in records] == replay(records, **settings)
    fed = [r["tp_loss"] for r in records if r["tp_loss"] is not None]
    assert t.scheduler.state_dict()["k"]["tp"] == pytest.approx(ema(fed, 0.5), rel=1e-12)
    assert t.scheduler.state_dict()["k"]["id"] == pytest.approx(
        ema([r["id_loss"] for r in records], 0.5), rel=1e-12)


def test_balanced_draws_every_batch_balanced_and_feeds_every_triplet(data_root, tmp_path):
    t = trainer(data_root, tmp_path, "dynamic.sampler=balanced", "dynamic.delta=1e9")
    records = [t.train_step() for _ in range(8)]
    assert {r["sampler"] for r in records} == {"balanced"}
    assert "id" in {r["objective"] for r in records[2:]}  # the rule still picks the loss
    settings = dict(alpha=0.5, delta=1e9, combine="sum", sampler="balanced")
    assert [(r["objective"], r["sampler"]) for r in records] == replay(records, **settings)
    fed = [r["tp_loss"] for r in records]
    assert None not in fed
    assert t.scheduler.state_dict()["k"]["tp"] == pytest.approx(ema(fed, 0.5), rel=1e-12)


def test_init_checkpoint_fine_tunes_from_a_model_file_with_new_classifiers(data_root, tmp_path):
    from reidkit.models import build_model
    from reidkit.models.io import CheckpointError, save_model

    source = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    save_model(tmp_path / "src.safetensors", source, {"input_size": [64, 32]})
    t = trainer(data_root, tmp_path / "run", f"model.init_checkpoint={tmp_path / 'src.safetensors'}")
    own, src = t.saved_model.state_dict(), source.state_dict()
    assert torch.equal(own["backbone.conv1.weight"], src["backbone.conv1.weight"])
    assert own["heads.0.classifier.weight"].shape[0] != src["heads.0.classifier.weight"].shape[0]
    baseline = build_model("baseline", num_classes=5, backbone="resnet18")
    save_model(tmp_path / "other.safetensors", baseline, {"input_size": [64, 32]})
    with pytest.raises(CheckpointError, match="name='baseline', but name='pyramid' is needed"):
        trainer(data_root, tmp_path / "run2", f"model.init_checkpoint={tmp_path / 'other.safetensors'}")
