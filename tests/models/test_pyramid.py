import json

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import TripletLoss, id_loss
from reidkit.models import GlobalBaseline, Pyramid, TrainOutput, build_model
from reidkit.models.pyramid import pyramid_pool, stripe_bounds

# resnet18 with last stride 1 divides by 16: 96x32 -> a 6x2 map, 100x50 -> 7x4 (7 rows, 6 stripes).
SMALL = (3, 96, 32)
ODD = (3, 100, 50)


@pytest.fixture(scope="module")
def pyramid() -> Pyramid:
    torch.manual_seed(0)
    return build_model("pyramid", 7, backbone="resnet18")


def _reference_pool(fmap: torch.Tensor, bounds: list[int], branches) -> torch.Tensor:
    """Slice each branch's rows and pool them with torch's adaptive pooling."""
    out = []
    for first, count in branches:
        part = fmap[:, :, bounds[first]:bounds[first + count]]
        out.append((F.adaptive_avg_pool2d(part, 1) + F.adaptive_max_pool2d(part, 1)).flatten(1))
    return torch.stack(out)


def test_stripe_bounds():
    assert stripe_bounds(24, 6) == [0, 4, 8, 12, 16, 20, 24]
    assert stripe_bounds(7, 6) == [0, 1, 2, 3, 4, 5, 7]
    for height in range(6, 40):
        bounds = stripe_bounds(height, 6)
        sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
        assert bounds[0] == 0 and bounds[-1] == height
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize("height", [6, 7, 12, 16])
def test_pyramid_pool_matches_sliced_pooling(height):
    torch.manual_seed(height)
    fmap = torch.randn(2, 5, height, 3)
    levels = [1, 2, 3, 4, 5, 6]
    branches = [(first, lv) for lv in levels for first in range(7 - lv)]
    pooled = pyramid_pool(fmap, 6, levels)
    assert pooled.shape == (21, 2, 5)
    expected = _reference_pool(fmap, stripe_bounds(height, 6), branches)
    torch.testing.assert_close(pooled, expected)
    # the last branch is the whole map
    torch.testing.assert_close(pooled[-1], fmap.mean((2, 3)) + fmap.amax((2, 3)))
    some = [(first, lv) for lv in (2, 5) for first in range(7 - lv)]
    torch.testing.assert_close(pyramid_pool(fmap, 6, [2, 5]),
                               _reference_pool(fmap, stripe_bounds(height, 6), some))


def test_branch_structure(pyramid):
    assert len(pyramid.heads) == 21
    assert pyramid.branches[:6] == [(i, 1) for i in range(6)]
    assert pyramid.branches[-1] == (0, 6)
    assert pyramid.feature_dim == 21 * 128 == 2688


def test_train_and_eval_outputs(pyramid):
    x = torch.randn(4, *SMALL)
    pyramid.train()
    out = pyramid(x)
    assert isinstance(out, TrainOutput)
    assert len(out.logits) == 21
    assert all(logits.shape == (4, 7) for logits in out.logits)
    assert out.features.shape == (4, 2688)
    assert (out.features >= 0).all()  # taken after the ReLU
    pyramid.eval()
    with torch.no_grad():
        assert pyramid(x).shape == (4, 2688)


def test_eval_feature_matches_reference_on_odd_height(pyramid):
    pyramid.eval()
    x = torch.randn(3, *ODD)
    with torch.no_grad():
        fmap = pyramid.backbone(x)
        assert fmap.shape[-2:] == (7, 4)
        pooled = _reference_pool(fmap, stripe_bounds(7, 6), pyramid.branches)
        expected = torch.cat([head.reduce(p) for head, p in zip(pyramid.heads, pooled, strict=True)], 1)
        torch.testing.assert_close(pyramid(x), expected)


def test_gradient_reaches_every_branch(pyramid):
    pyramid.train()
    pyramid.zero_grad()
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    out = pyramid(torch.randn(6, *SMALL))
    loss = id_loss(out.logits, targets) + TripletLoss(margin=1.4)(out.features, targets).loss
    loss.backward()
    for head in pyramid.heads:
        assert head.reduce[0].weight.grad.abs().sum() > 0
        assert head.classifier.weight.grad.abs().sum() > 0
    assert pyramid.backbone.conv1.weight.grad.abs().sum() > 0


def test_normalized_features():
    torch.manual_seed(0)
    model = build_model("pyramid", 3, backbone="resnet18", num_stripes=2,
                        normalize_features=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 64, 32))
    assert feats.shape == (2, 3 * 128)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(2))


def test_levels_and_stripes():
    with torch.device("meta"):  # structure only: skip initialising the weights
        one_level = build_model("pyramid", 3, backbone="resnet18", levels=[1], feat_dim=16)
        stripes = build_model("stripes", 3, backbone="resnet18")
    assert one_level.branches == [(i, 1) for i in range(6)]
    assert one_level.feature_dim == 6 * 16
    assert len(stripes.heads) == 6 and stripes.config["levels"] == [1]
    coarse = build_model("pyramid", 3, backbone="resnet18", levels=[6, 5])
    assert coarse.branches == [(0, 5), (1, 5), (0, 6)]
    coarse.eval()
    with torch.no_grad():
        assert coarse(torch.randn(2, *ODD)).shape == (2, 3 * 128)


def test_baseline():
    torch.manual_seed(0)
    model = build_model("baseline", 5, backbone="resnet18")
    assert isinstance(model, GlobalBaseline)
    x = torch.randn(4, *SMALL)
    out = model(x)
    assert len(out.logits) == 1 and out.logits[0].shape == (4, 5)
    assert out.features.shape == (4, 512)
    model.eval()
    with torch.no_grad():
        pooled = model.backbone(x).mean((2, 3))
        neck = model.neck
        expected = (pooled - neck.running_mean) / torch.sqrt(neck.running_var + neck.eps) \
            * neck.weight + neck.bias
        torch.testing.assert_close(model(x), expected)
    assert model.feature_dim == 512


def test_config_round_trip(pyramid):
    config = json.loads(json.dumps(pyramid.config))  # a checkpoint stores it as JSON
    rebuilt = build_model(**config)
    rebuilt.load_state_dict(pyramid.state_dict())
    pyramid.eval()
    rebuilt.eval()
    x = torch.randn(2, *SMALL)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), pyramid(x))
    baseline = build_model("baseline", 4, backbone="resnet18", last_stride=2)
    assert build_model(**baseline.config).config == baseline.config


def test_param_groups(pyramid):
    groups = pyramid.param_groups(0.01, 0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 0.01), ("new", 0.1)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(pyramid.parameters()))
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in pyramid.backbone.parameters()}
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted as is


def test_clear_errors(pyramid):
    with pytest.raises(ValueError, match="unknown model 'pcb'; known: baseline, mtdnet, pyramid, stripes"):
        build_model("pcb", 3)
    with pytest.raises(ValueError, match="has no option 'stripes'"):
        build_model("pyramid", 3, stripes=6)
    with pytest.raises(ValueError, match="needs num_classes"):
        build_model("pyramid")
    with pytest.raises(ValueError, match="needs num_classes"):
        build_model("baseline", 0)
    with pytest.raises(ValueError, match="unknown backbone 'resnet5'"):
        build_model("pyramid", 3, backbone="resnet5")
    for levels in ([0], [7], [1, 1], []):
        with pytest.raises(ValueError, match="levels must be"):
            build_model("pyramid", 3, backbone="resnet18", levels=levels)
    with pytest.raises(ValueError, match="has no option 'levels'"):
        build_model("stripes", 3, levels=[2])
    pyramid.eval()
    with pytest.raises(ValueError, match="4 rows, fewer than num_stripes=6"):
        pyramid(torch.randn(1, 3, 64, 32))
