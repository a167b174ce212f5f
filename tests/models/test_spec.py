"""The model contract: what each model says it takes and how it ranks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidkit.models import ModelSpec, build_model, model_spec
from reidkit.models.mtdnet import CrossDomainMTDNet, MTDNet
from reidkit.models.spec import InputSizeError


@pytest.mark.parametrize(("variant", "ranks_by", "scores_pairs", "feature_dim"), [
    ("mtd", "pairs", True, 16), ("cls", "pairs", True, 0), ("trp", "embedding", True, 16),
    ("rnk", "embedding", False, 16), ("rnk-shallow", "embedding", False, 16)])
def test_each_mtdnet_variant_says_how_it_ranks(variant, ranks_by, scores_pairs, feature_dim):
    spec = MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=32, rank_dim=16,
                  variant=variant).spec
    assert (spec.ranks_by, spec.scores_pairs, spec.feature_dim) == (ranks_by, scores_pairs, feature_dim)
    # CaffeNet takes un-normalised RGB [0, 1] and makes Caffe's BGR 0-255 itself
    assert (spec.mean, spec.std, spec.network_input) == (None, None, "caffe-bgr-255")
    assert spec.input_size == (67, 67) and spec.fixed_size


def test_resnet_mtdnet_and_pyramid_take_imagenet_normalised_input():
    resnet = MTDNet(trunk="resnet18", input_size=(99, 83), rank_dim=8).spec
    assert (resnet.mean, resnet.std, resnet.network_input) == (IMAGENET_MEAN, IMAGENET_STD,
                                                               "rgb-normalized")
    pyramid = build_model("pyramid", num_classes=3, backbone="resnet18").spec
    assert (pyramid.feature_dim, pyramid.part_dim, pyramid.ranks_by) == (21 * 128, 128, "embedding")
    assert pyramid.input_size is None and not pyramid.fixed_size  # any size until trained
    baseline = build_model("baseline", num_classes=3, backbone="resnet18").spec
    assert (baseline.feature_dim, baseline.part_dim) == (512, None)


def test_sizes_resolve_against_the_contract():
    free = ModelSpec(feature_dim=4)
    with pytest.raises(InputSizeError, match="input size is not known"):
        free.resolve_size()
    assert free.resolve_size((64, 32)) == (64, 32)
    trained = free.trained_at((96, 48), "bicubic")
    assert (trained.resolve_size(), trained.interpolation) == ((96, 48), "bicubic")
    assert trained.resolve_size([128, 64]) == (128, 64)  # a free model takes another size
    fixed = ModelSpec(feature_dim=4, input_size=(67, 67), fixed_size=True)
    with pytest.raises(InputSizeError, match="takes 67x67 images only; got 96x48"):
        fixed.resolve_size((96, 48))
    with pytest.raises(InputSizeError, match="positive values"):
        free.resolve_size((0, 5))
    assert trained.preprocessing() == {"input_size": [96, 48], "interpolation": "bicubic"}


def test_the_test_transform_follows_the_spec():
    image = Image.new("RGB", (20, 40), (255, 128, 0))
    raw = ModelSpec(feature_dim=1, input_size=(8, 4), mean=None, std=None).test_transform()(image)
    assert raw.shape == (3, 8, 4)
    torch.testing.assert_close(raw[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    normalised = ModelSpec(feature_dim=1, input_size=(8, 4)).test_transform()(image)
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD)
    torch.testing.assert_close(normalised[:, 0, 0], expected)


def test_wrappers_share_their_models_spec_and_strangers_have_none():
    target = MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=32, rank_dim=8)
    assert model_spec(CrossDomainMTDNet(target, target)) is target.spec
    with pytest.raises(TypeError, match="not a reidkit model"):
        model_spec(nn.Linear(2, 2))


def test_one_build_call_builds_every_model():
    """The registry's common call: MTDnet has no identity classifier and ignores num_classes."""
    model = build_model("mtdnet", num_classes=751, trunk="caffenet", input_size=(67, 67),
                        fc_width=32)
    assert isinstance(model, MTDNet) and "num_classes" not in model.config
