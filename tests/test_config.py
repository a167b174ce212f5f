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


# --- one config family per trainer -----------------------------------------------------------


@pytest.mark.parametrize(("recipe", "foreign", "owner"), [
    ("mtdnet_viper", "dynamic.combine=focal", "baseline/pyramid/stripes"),
    ("mtdnet_viper", "loss.triplet_margin=0.3", "baseline/pyramid/stripes"),
    ("mtdnet_viper", "sampler.num_ids=8", "baseline/pyramid/stripes"),
    ("mtdnet_viper", "data.input_path=cache", "baseline/pyramid/stripes"),
    ("mtdnet_viper", "model.init_checkpoint=a.safetensors", "baseline/pyramid/stripes"),
    ("pyramid_market1501_r50", "mtdnet.margin=2", "mtdnet"),
    ("pyramid_market1501_r50", "optim.bias_lr_factor=2", "mtdnet"),
])
def test_a_family_refuses_the_other_familys_keys(recipe, foreign, owner):
    with pytest.raises(ConfigError) as err:
        load_config(recipe, [foreign])
    key = foreign.partition("=")[0]
    section = key.split(".")[0] if key.split(".")[0] in ("dynamic", "loss", "mtdnet") else key
    assert f"{section} is not a setting of" in str(err.value)
    assert f"(it belongs to {owner})" in str(err.value)


def test_each_family_has_its_own_batch_rules():
    from reidkit.config import IDTripletConfig, MTDNetConfig

    # MTDnet batches are triplets (mtdnet.triplets_per_batch); sampler.batch_size is only the
    # evaluation batch, free of Pyramid's num_ids x num_instances rule
    mtd = load_config("mtdnet_viper", ["sampler.batch_size=32"])
    assert type(mtd) is MTDNetConfig and mtd.sampler.batch_size == 32
    with pytest.raises(ConfigError, match="num_ids x sampler.num_instances"):
        load_config("pyramid_market1501_r50", ["sampler.batch_size=32"])
    pyr = load_config("pyramid_market1501_r50", ["sampler.batch_size=32", "sampler.num_ids=8",
                                                 "sampler.num_instances=4"])
    assert type(pyr) is IDTripletConfig
    # the family follows model.name, also when only an override names it
    assert type(load_config(None, ["model.name=mtdnet"])) is MTDNetConfig
    with pytest.raises(ConfigError, match="model.name: 'resnet' is not a trainable model"):
        load_config(None, ["model.name=resnet"])


def test_mtdnet_family_defaults():
    cfg = load_config(None, ["model.name=mtdnet"])
    assert (cfg.model.backbone, cfg.optim.bias_lr_factor, cfg.mtdnet.negatives_per_positive) == (
        "caffenet", 1.0, 10)
    # the Caffe release's input, not Pyramid's: 227x227 bilinear stretch, no erasing
    d = cfg.data
    assert (d.height, d.width, d.interpolation, d.erase_p, d.flip_p) == (227, 227, "bilinear", 0.0, 0.5)
    assert not hasattr(cfg, "dynamic") and not hasattr(cfg, "loss")


def test_dynamic_scheduler_defaults_are_the_configs():
    """One set of defaults: a scheduler built without arguments runs the recipe defaults."""
    from reidkit.config import DynamicConfig
    from reidkit.training.dynamic import DynamicLossScheduler

    scheduler, cfg = DynamicLossScheduler(), DynamicConfig()
    assert (scheduler.combine, scheduler.sampler_mode, scheduler.update_mode) == (
        cfg.combine, cfg.sampler, cfg.update)
    assert (scheduler.alpha, scheduler.lam, scheduler.delta) == (cfg.alpha, cfg.lam, cfg.delta)


def test_print_config_shows_the_resolved_recipe():
    import yaml
    from typer.testing import CliRunner

    from reidkit.cli import app

    result = CliRunner().invoke(app, ["train", "--config", "mtdnet_viper", "--print-config",
                                      "sampler.batch_size=32", "train.output_dir=/nonexistent/run"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed == load_config("mtdnet_viper", ["sampler.batch_size=32",
                                                   "train.output_dir=/nonexistent/run"]).to_dict()
    # from the _mtdnet base, the recipe, the override and the defaults
    assert printed["optim"]["bias_lr_factor"] == 2.0 and printed["data"]["dataset"] == "viper"
    assert printed["sampler"] == {"batch_size": 32} and printed["train"]["seed"] == 0
    assert "dynamic" not in printed
    assert not __import__("pathlib").Path("/nonexistent/run").exists()
