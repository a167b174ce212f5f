import pytest

from reidkit.config import Config, ConfigError, list_recipes, load_config


def test_defaults_are_the_papers_settings():
    cfg = load_config()
    assert cfg.model.name == "pyramid"
    assert cfg.loss.triplet_margin == 1.4
    assert (cfg.dynamic.alpha, cfg.dynamic.lam, cfg.dynamic.delta) == (0.25, 2.0, 0.16)
    assert (cfg.optim.lr, cfg.optim.new_lr, cfg.optim.momentum) == (0.01, 0.1, 0.9)
    assert cfg.optim.milestones == [60, 70, 80, 90, 100] and cfg.optim.gamma == 0.5
    assert cfg.sampler.num_ids * cfg.sampler.num_instances == cfg.sampler.batch_size == 64


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)


def test_recipe_file_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  epochs: 5\nmodel:\n  backbone: resnet18\n")
    cfg = load_config(path, ["train.epochs=7", "optim.milestones=[2, 4]",
                             "model.options.num_stripes=4", "model.pretrained=null"])
    assert cfg.train.epochs == 7
    assert cfg.optim.milestones == [2, 4]
    assert cfg.model.options == {"num_stripes": 4}
    assert cfg.model.backbone == "resnet18" and cfg.model.pretrained is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.epoch=3"], "train.epoch"),  # typo of a key
        (["train.epochs=many"], "train.epochs"),  # wrong type
        (["dynamic.combine=product"], "dynamic.combine"),
        (["sampler.batch_size=60"], "num_ids"),  # P x K must fill the batch
        (["optim.lr=-1"], "optim.lr"),
        (["epochs"], "section.key=value"),
        (["train.epochs.x=1"], "train.epochs"),
        (["train=3", "train.epochs=1"], "not a section"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped recipe"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_yaml_floats_without_a_dot_and_strict_types():
    cfg = load_config(None, ["optim.lr=1e-4", "optim.new_lr=3E-3"])
    assert (cfg.optim.lr, cfg.optim.new_lr) == (1e-4, 3e-3)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=true"])  # not 1 epoch
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=.inf"])
