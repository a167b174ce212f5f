"""MTDnet training on a tiny synthetic set: batches, losses, variants, checkpoints, cross-domain."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reidkit.config import list_recipes, load_config
from reidkit.data import ImageRecord
from reidkit.data.synthetic import generate
from reidkit.models.io import CheckpointError, load_model, save_model
from reidkit.models.mtdnet import MTDNet
from reidkit.training.base import ResumeError
from reidkit.training.mtdnet_trainer import MTDNetTrainer, split_validation

pytestmark = pytest.mark.slow

SIZE = 67  # the smallest input CaffeNet's trunk takes: 3x3 maps, a cheap head


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    generate(base / "a", preset="tiny", num_train_ids=8, num_test_ids=3, images_per_id=4, seed=1)
    generate(base / "b", preset="tiny", num_train_ids=6, num_test_ids=3, images_per_id=4, seed=2,
             domain="b")
    return base


def tiny(root, out, *extra):
    return load_config("mtdnet_synth_cpu", [
        f"data.root={root}", f"train.output_dir={out}", f"data.height={SIZE}",
        f"data.width={SIZE}", "data.num_workers=0", "data.val_ids=2", "train.device=cpu",
        "mtdnet.triplets_per_batch=2", "model.options.rank_dim=16", "train.epochs=2",
        "train.iters_per_epoch=2", "train.eval_every=1", "sampler.batch_size=8",
        *extra])


def test_batches_are_cross_camera_triplets_in_order(roots, tmp_path):
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path, "mtdnet.triplets_per_batch=4",
                                 "mtdnet.triplet_sampling=anchors", "mtdnet.negatives_per_positive=1"))
    images, pids, camids, _ = next(trainer.streams["target"])
    assert images.shape == (12, 3, SIZE, SIZE)
    a, p, n = pids[0::3], pids[1::3], pids[2::3]
    assert torch.equal(a, p) and bool((a != n).all())
    assert bool((camids[0::3] != camids[1::3]).all()) and torch.equal(camids[1::3], camids[2::3])
    # the pair's mirror follows it: anchor and positive swap roles
    assert torch.equal(pids[0::6], pids[3::6])


def test_all_pairs_batches_follow_the_authors_list(roots, tmp_path):
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path, "mtdnet.triplets_per_batch=8",
                                 "mtdnet.negatives_per_positive=10"))
    sampler = trainer.streams["target"].sampler.sampler
    records = trainer.dataset.train
    pids, cams = np.array([r.pid for r in records]), np.array([r.camid for r in records])
    ordered_pairs = sum(int((cams[pids == p][:, None] != cams[pids == p][None, :]).sum())
                        for p in np.unique(pids))
    assert sampler.num_triplets == 10 * ordered_pairs
    images, bpids, camids, _ = next(trainer.streams["target"])
    assert images.shape == (24, 3, SIZE, SIZE)
    a, p, n = bpids[0::3], bpids[1::3], bpids[2::3]
    assert torch.equal(a, p) and bool((a != n).all())
    assert bool((camids[0::3] != camids[1::3]).all()) and torch.equal(camids[1::3], camids[2::3])


def test_steps_lower_the_loss_on_a_fixed_batch(roots, tmp_path):
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path, "optim.lr=3e-4", "optim.new_lr=3e-4"))
    batch = trainer._next_triplets("target")
    trainer._next_triplets = lambda name: batch

    def eval_loss():
        trainer.model.eval()  # no dropout: the same batch gives the same loss
        with torch.no_grad():
            loss = trainer.loss(trainer.model.forward_triplets(*batch))["total"].item()
        trainer.model.train()
        return loss

    before = eval_loss()
    records = [trainer.train_step() for _ in range(6)]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"loss", "triplet", "verification", "lr"} <= set(records[0])
    assert records[0]["loss"] == pytest.approx(records[0]["triplet"] + records[0]["verification"])
    assert eval_loss() < 0.8 * before


def test_fit_logs_validates_and_saves_a_loadable_model(roots, tmp_path):
    summary = MTDNetTrainer(tiny(roots / "a", tmp_path)).fit()
    assert (summary["epochs"], summary["steps"]) == (2, 4)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    vals = [r for r in records if "val_mAP" in r]
    assert len(vals) == 2 and all(0 <= r["val_rank1"] <= 1 for r in vals)
    assert summary["best_epoch"] in (1, 2)
    model = load_model(summary["model"], expect={"name": "mtdnet"})
    assert model.config["input_size"] == [SIZE, SIZE] and model.spec.ranks_by == "pairs"
    assert model(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 16)


def test_resume_continues_exactly(roots, tmp_path):
    straight = MTDNetTrainer(tiny(roots / "a", tmp_path / "a", "data.val_ids=0"))
    straight.fit()
    MTDNetTrainer(tiny(roots / "a", tmp_path / "b", "data.val_ids=0", "train.epochs=1")).fit()
    resumed = MTDNetTrainer(tiny(roots / "a", tmp_path / "b", "data.val_ids=0"), resume=True)
    assert (resumed.epoch, resumed.step) == (1, 2)
    resumed.fit()
    for (name, a), b in zip(straight.target.state_dict().items(),
                            resumed.target.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(ResumeError, match="mtdnet.margin"):
        MTDNetTrainer(tiny(roots / "a", tmp_path / "b", "data.val_ids=0", "mtdnet.margin=0.5"),
                      resume=True)


@pytest.mark.parametrize(("variant", "terms"), [
    ("cls", {"verification"}), ("rnk", {"triplet"}), ("trp", {"triplet", "verification"})])
def test_variants_train_their_own_tasks(roots, tmp_path, variant, terms):
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path, f"model.options.variant={variant}"))
    before = {k: v.clone() for k, v in trainer.target.state_dict().items()}
    record = trainer.train_step()
    assert set(record) - {"step", "epoch", "lr", "loss"} == terms
    assert not torch.equal(before["trunk.conv1.weight"], trainer.target.trunk.conv1.weight)
    metrics = trainer.evaluate(*trainer.val)  # pairs for cls, embeddings for rnk / trp
    assert 0 <= metrics["rank1"] <= 1 and 0 < metrics["mAP"] <= 1


def test_init_checkpoint_copies_weights_and_checks_the_architecture(roots, tmp_path):
    source = MTDNet(trunk="caffenet", input_size=(SIZE, SIZE), rank_dim=16,
                          caffe_input=False)
    save_model(tmp_path / "src.safetensors", source)
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path / "run",
                                 f"mtdnet.init_checkpoint={tmp_path / 'src.safetensors'}"))
    for name, value in source.state_dict().items():
        torch.testing.assert_close(trainer.target.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="rank_dim=16"):
        MTDNetTrainer(tiny(roots / "a", tmp_path / "run2", "model.options.rank_dim=8",
                           f"mtdnet.init_checkpoint={tmp_path / 'src.safetensors'}"))


def test_cross_domain_trains_the_target_and_saves_it_alone(roots, tmp_path):
    source = MTDNet(trunk="caffenet", input_size=(SIZE, SIZE), rank_dim=16,
                          caffe_input=False)
    src = tmp_path / "src.safetensors"
    save_model(src, source)
    with pytest.raises(ValueError, match="source_dataset"):
        MTDNetTrainer(tiny(roots / "b", tmp_path / "x", "mtdnet.cross_domain=true",
                           f"mtdnet.init_checkpoint={src}"))
    cfg = tiny(roots / "b", tmp_path / "run", "mtdnet.cross_domain=true",
               f"mtdnet.init_checkpoint={src}", "mtdnet.source_dataset=market1501",
               f"mtdnet.source_root={roots / 'a'}", "train.epochs=1")
    trainer = MTDNetTrainer(cfg)
    summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    step = records[0]
    assert step["loss"] == pytest.approx(step["triplet"] + step["verification"]
                                         + step["contrastive"], rel=1e-5)
    assert trainer.streams["source"].state_dict() == {"epoch": 0, "position": 2}
    for name, value in source.state_dict().items():  # the frozen copy did not move
        torch.testing.assert_close(trainer.model.source.state_dict()[name], value, rtol=0, atol=0)
    assert not any(p.requires_grad for p in trainer.model.source.parameters())
    assert not torch.equal(trainer.target.rank_fc.weight, source.rank_fc.weight)
    saved = load_file(summary["model"])
    assert set(saved) == set(source.state_dict())  # target keys only, no "source." copy
    state = torch.load(tmp_path / "run/train_state.pt", weights_only=True)
    assert set(state["model"]) == set(source.state_dict())


def test_cross_domain_needs_a_source_model(roots, tmp_path):
    with pytest.raises(ValueError, match="init_checkpoint"):
        MTDNetTrainer(tiny(roots / "b", tmp_path, "mtdnet.cross_domain=true"))


def test_split_validation_keeps_a_gallery_match_for_one_image_per_camera():
    records = [ImageRecord("a", 0, 1), ImageRecord("b", 0, 0), ImageRecord("c", 1, 0),
               ImageRecord("d", 2, 3), ImageRecord("e", 2, 5), ImageRecord("f", 2, 3)]
    query, gallery = split_validation(records)
    assert [r.path for r in query] == ["b", "d", "f"]
    assert [r.path for r in gallery] == ["a", "e"]  # pid 1 has one camera: dropped


def test_recipes_follow_the_paper():
    names = [n for n in list_recipes() if n.startswith("mtdnet_")]
    assert {"mtdnet_cuhk03", "mtdnet_cuhk01_100", "mtdnet_cuhk01_486", "mtdnet_viper",
            "mtdnet_ilids", "mtdnet_prid2011", "mtdnet_synth_cpu"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.model.name == "mtdnet" and cfg.optim.milestones == []
        if name == "mtdnet_synth_cpu":
            continue
        iterations = cfg.train.epochs * cfg.train.iters_per_epoch
        assert (cfg.data.height, cfg.data.width, cfg.mtdnet.triplets_per_batch) == (227, 227, 128)
        assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 5e-4)
        assert cfg.optim.lr == cfg.optim.new_lr == (1e-4 if name == "mtdnet_prid2011" else 1e-3)
        if name == "mtdnet_cuhk03":
            assert iterations == 200_000 and cfg.mtdnet.init_checkpoint is None
        else:
            assert iterations == 20_000
            assert cfg.mtdnet.init_checkpoint == "runs/mtdnet_cuhk03/best.safetensors"


def test_caffe_bias_rule_lr_x2_and_no_decay(roots, tmp_path):
    trainer = MTDNetTrainer(tiny(roots / "a", tmp_path, "optim.name=sgd", "optim.lr=0.001",
                                 "optim.new_lr=0.001", "optim.bias_lr_factor=2",
                                 "optim.bias_decay=false", "optim.weight_decay=5e-4"))
    names = {id(p): n for n, p in trainer.target.named_parameters()}
    seen = 0
    for group in trainer.optimizer.param_groups:
        for param in group["params"]:
            bias = names[id(param)].endswith(".bias")
            assert (group["lr"], group["weight_decay"]) == ((0.002, 0.0) if bias else (0.001, 5e-4))
            seen += 1
    assert seen == len(names)


def test_cross_domain_with_the_authors_pair_list(roots, tmp_path):
    source = MTDNet(trunk="caffenet", input_size=(SIZE, SIZE), rank_dim=16,
                          caffe_input=False)
    src = tmp_path / "src.safetensors"
    save_model(src, source)
    trainer = MTDNetTrainer(tiny(roots / "b", tmp_path / "run", "mtdnet.cross_domain=true",
                                 f"mtdnet.init_checkpoint={src}", "mtdnet.source_dataset=market1501",
                                 f"mtdnet.source_root={roots / 'a'}", "mtdnet.contrastive_pairing=pairs",
                                 "mtdnet.triplets_per_batch=8"))
    first, second, same = trainer._next_pairs("source")
    assert first.shape == second.shape == (8, 3, SIZE, SIZE)
    assert same.tolist() == [True] * 4 + [False] * 4  # half positive, like neg_ratio 1
    record = trainer.train_step()
    assert record["loss"] == pytest.approx(record["triplet"] + record["verification"]
                                           + record["contrastive"], rel=1e-5)
