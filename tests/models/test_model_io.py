import copy
import os

import pytest
import torch

from reidkit.models import build_model
from reidkit.models.io import (
    CheckpointError,
    atomic_write,
    load_model,
    read_model_meta,
    read_model_spec,
    save_model,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("pyramid", num_classes=7, backbone="resnet18", num_stripes=3).eval()


def test_round_trip_gives_the_same_features(tmp_path, model):
    path = tmp_path / "m.safetensors"
    trained = copy.copy(model)
    trained.spec = model.spec.trained_at((64, 32), "bicubic")
    save_model(path, trained, {"epoch": 3})
    config, extra = read_model_meta(path)
    assert config["name"] == "pyramid" and config["num_classes"] == 7
    assert extra == {"epoch": 3, "input_size": [64, 32], "interpolation": "bicubic"}
    loaded = load_model(path).eval()
    # the contract comes back with the weights: the training size and resize, 3 x 128-d parts
    assert loaded.spec == trained.spec and loaded.spec.input_size == (64, 32)
    assert (loaded.spec.feature_dim, loaded.spec.part_dim) == (6 * 128, 128)
    assert read_model_spec(path) == loaded.spec  # the same, without reading the weights
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_wrong_expectations_and_files_are_refused(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_model(path, model)
    with pytest.raises(CheckpointError, match="num_classes=7, but num_classes=751"):
        load_model(path, expect={"num_classes": 751})
    with pytest.raises(CheckpointError, match="name='pyramid', but name='mtdnet'"):
        load_model(path, expect={"name": "mtdnet"})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="not a reidkit model file"):
        load_model(junk)


def test_weights_that_do_not_fit_name_the_keys(tmp_path, model):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_model(path, model)
    config, _ = read_model_meta(path)
    other = build_model("pyramid", num_classes=9, backbone="resnet18", num_stripes=3)
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    meta = {"format": "reidkit-model/1", "config": __import__("json").dumps(config), "extra": "{}"}
    save_file(state, path, metadata=meta)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path)


def test_a_write_that_dies_midway_keeps_the_previous_file(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_model(path, model)
    before = path.read_bytes()

    def dies_midway(tmp):
        with open(tmp, "wb") as fh:
            fh.write(before[:100])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, dies_midway)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
