"""The shipped recipes hold the authors' released settings; `_base_` inheritance."""

import pytest

from reidkit.config import RECIPES, ConfigError, list_recipes, load_config

PYRAMID = [n for n in list_recipes() if n.startswith("pyramid_")]
MTDNET_REAL = ["mtdnet_cuhk03", "mtdnet_cuhk01_100", "mtdnet_cuhk01_486", "mtdnet_viper",
               "mtdnet_ilids", "mtdnet_prid2011"]


def test_all_eight_pyramid_recipes_ship():
    assert len(PYRAMID) == 8
    assert {n.rsplit("_", 1)[1] for n in PYRAMID} == {"r50", "r101"}


@pytest.mark.parametrize("name", PYRAMID)
def test_pyramid_recipes_hold_the_released_training(name):
    # PersonReID-Pyramid 63ffd64 src/train.py and YouReID models/pyramid.py (see _pyramid.yaml)
    c = load_config(name)
    d = c.data
    assert (d.height, d.width, d.flip_p, d.erase_p, d.erase_max_area, d.pad) == (384, 128, 0.5, 0.2, 0.4, 0)
    assert d.interpolation == "bicubic" and d.val_ids == 0
    assert c.model.name == "pyramid"
    assert c.model.backbone == {"r50": "resnet50", "r101": "resnet101"}[name.rsplit("_", 1)[1]]
    assert c.model.options == {"num_stripes": 6, "feat_dim": 128, "dropout": 0.2, "last_stride": 1}
    assert (c.loss.triplet_on, c.loss.triplet_margin, c.loss.label_smoothing) == ("branches", 1.4, 0.0)
    assert (c.dynamic.combine, c.dynamic.sampler, c.dynamic.update) == ("sum", "balanced", "iteration")
    assert (c.dynamic.alpha, c.dynamic.lam, c.dynamic.delta) == (0.25, 2.0, 0.16)
    assert (c.sampler.batch_size, c.sampler.num_ids, c.sampler.num_instances) == (64, 8, 8)
    o = c.optim
    assert (o.name, o.lr, o.new_lr, o.momentum, o.weight_decay) == ("sgd", 0.01, 0.1, 0.9, 5e-4)
    assert (o.warmup_epochs, o.milestones, o.gamma, c.train.epochs) == (0, [60, 70, 80, 90, 100], 0.5, 120)
    assert c.train.output_dir == f"runs/{name}"


def test_paper_variant_is_one_override_away():
    c = load_config("pyramid_market1501_r101", ["dynamic.combine=focal", "dynamic.sampler=switch"])
    assert (c.dynamic.combine, c.dynamic.sampler) == ("focal", "switch")


@pytest.mark.parametrize("name", MTDNET_REAL)
def test_mtdnet_recipes_hold_the_caffe_release(name):
    # cwhgn/MTDnet Nets/MTDnet/train_val.prototxt, solver_*.prototxt, BuildData/BuildData_cuhk03.py
    c = load_config(name)
    assert (c.data.height, c.data.width, c.data.flip_p, c.data.erase_p, c.data.pad) == (227, 227, 0.5, 0, 0)
    assert c.model.options == {"variant": "mtd", "rank_dim": 512, "dropout": 0.5, "init": "caffe"}
    m = c.mtdnet
    assert (m.triplets_per_batch, m.triplet_sampling, m.negatives_per_positive) == (128, "all-pairs", 10)
    assert (m.margin, m.triplet_weight, m.verification_weight) == (1.0, 1.0, 1.0)
    assert m.contrastive_pairing == "pairs"
    o = c.optim
    assert (o.name, o.momentum, o.weight_decay, o.milestones) == ("sgd", 0.9, 5e-4, [])
    assert (o.bias_lr_factor, o.bias_decay) == (2.0, False)
    assert o.lr == o.new_lr == (1e-4 if name == "mtdnet_prid2011" else 1e-3)
    iterations = c.train.epochs * c.train.iters_per_epoch
    assert iterations == (200_000 if name == "mtdnet_cuhk03" else 20_000)
    if name != "mtdnet_cuhk03":
        assert m.init_checkpoint == "runs/mtdnet_cuhk03/best.safetensors"


def test_ilids_recipe_uses_the_recorded_59_test_ids():
    assert load_config("mtdnet_ilids").data.options["test_ids"] == 59


def test_recipes_repeat_no_base_value():
    for name in PYRAMID:
        text = (RECIPES / f"{name}.yaml").read_text()
        assert "_base_: _pyramid" in text and "flip_p" not in text and "optim" not in text


def test_base_inheritance_merges_sections_and_replaces_options(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "data: {height: 64, width: 32, flip_p: 0.3}\nmodel: {options: {num_stripes: 4, dropout: 0.1}}\n")
    (tmp_path / "child.yaml").write_text(
        "_base_: base.yaml\ndata: {flip_p: 0.7}\nmodel: {options: {num_stripes: 2}}\n")
    c = load_config(tmp_path / "child.yaml", ["data.width=16"])
    assert (c.data.height, c.data.width, c.data.flip_p) == (64, 16, 0.7)
    assert c.model.options == {"num_stripes": 2}  # a model's options never mix with another's


def test_base_may_name_a_shipped_recipe_and_loops_are_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text("_base_: pyramid_market1501_r50\ntrain: {epochs: 3}\n")
    c = load_config(tmp_path / "mine.yaml")
    assert (c.train.epochs, c.model.backbone, c.data.erase_p) == (3, "resnet50", 0.2)
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: nowhere\n")
    with pytest.raises(ConfigError, match="neither a file nor a shipped recipe"):
        load_config(tmp_path / "c.yaml")


def test_bases_are_not_listed_as_recipes():
    assert not [n for n in list_recipes() if n.startswith("_")]
    assert (RECIPES / "_pyramid.yaml").is_file() and (RECIPES / "_mtdnet.yaml").is_file()


def test_override_errors_say_they_came_from_an_override():
    with pytest.raises(ConfigError, match="with overrides dynamic.sampler=random"):
        load_config("pyramid_market1501_r50", ["dynamic.sampler=random"])


def _leaves(section: dict, prefix: tuple[str, ...] = ()):
    for key, value in section.items():
        if isinstance(value, dict) and not key.endswith("options") and key != "fixed_weights":
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _at(tree: dict, key: tuple[str, ...]):
    for part in key:
        tree = tree[part]
    return tree


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_recipe_repeats_what_it_gets_anyway(path):
    """Each value a recipe sets differs from its base's, or from the default of its config family
    (``model.name`` excepted: it names the family)."""
    from reidkit.config import _read_recipe, _yaml, config_from_dict, resolve_recipe

    raw = _yaml(path.read_text()) or {}
    base = raw.pop("_base_", None)
    inherited = _read_recipe(resolve_recipe(base), ()) if base else {}
    family_defaults = type(config_from_dict({"model": {"name": load_config(path).model.name}}))()
    defaults = family_defaults.to_dict()
    repeated = []
    for key, value in _leaves(raw):
        if key == ("model", "name"):
            continue
        for source in (inherited, defaults):
            try:
                before = _at(source, key)
            except KeyError:
                continue
            if before == value:
                repeated.append(".".join(key))
            break
    assert repeated == []
