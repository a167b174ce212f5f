"""MTDnet: layer shapes from the paper, reference trunk, losses, cross-domain, weights, config."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from reidkit.losses.contrastive import contrastive_loss, cross_domain_contrastive_loss
from reidkit.losses.ranking import squared_triplet_loss
from reidkit.losses.verification import same_probability, verification_loss
from reidkit.models import build_model
from reidkit.models.mtdnet import (
    CrossDomainLoss,
    CrossDomainMTDNet,
    MTDNet,
    MTDNetLoss,
    load_trunk_weights,
)

SMALL = (67, 67)  # the smallest input the CaffeNet layers accept: 3x3 conv2 maps, 1x1 pool5


@pytest.fixture(scope="module")
def caffenet() -> MTDNet:
    torch.manual_seed(0)
    return MTDNet().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 227, 227, generator=torch.Generator().manual_seed(1))


def test_caffenet_sizes_from_the_paper(caffenet: MTDNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        maps = caffenet.trunk_features(images)
    assert maps.shape == (2, 256, 13, 13)
    assert caffenet.rank_fc.in_features == 43_264 == 13 * 13 * 256
    assert caffenet.rank_fc.out_features == 512
    assert caffenet.verifier.conv3.in_channels == 512
    assert caffenet.verifier.fc6.in_features == 6 * 6 * 256


def test_grouped_convolution_parameter_shapes(caffenet: MTDNet) -> None:
    shapes = {k: tuple(v.shape) for k, v in caffenet.state_dict().items()}
    assert shapes["trunk.conv1.weight"] == (96, 3, 11, 11)
    assert shapes["trunk.conv2.weight"] == (256, 48, 5, 5)
    assert shapes["verifier.conv3.weight"] == (384, 512, 3, 3)
    assert shapes["verifier.conv4.weight"] == (384, 192, 3, 3)
    assert shapes["verifier.conv5.weight"] == (256, 192, 3, 3)
    assert shapes["verifier.fc7.weight"] == (4096, 4096)
    assert shapes["verifier.fc8.weight"] == (2, 4096)


def _caffe_lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75):
    """Caffe's across-channel LRN written out: x / (1 + alpha/size * window sum of x^2)^beta."""
    sq = x.pow(2)
    out = torch.empty_like(x)
    half = size // 2
    for c in range(x.shape[1]):
        window = sq[:, max(0, c - half):c + half + 1].sum(dim=1)
        out[:, c] = x[:, c] / (1 + alpha / size * window).pow(beta)
    return out


def _grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, **kw) -> torch.Tensor:
    """A group-2 convolution as two independent halves, as Caffe computes it."""
    xs, ws, bs = x.chunk(2, dim=1), weight.chunk(2, dim=0), bias.chunk(2)
    return torch.cat([F.conv2d(xi, wi, bi, **kw) for xi, wi, bi in zip(xs, ws, bs, strict=True)],
                     dim=1)


def test_trunk_equals_caffenet_written_out(caffenet: MTDNet, images: torch.Tensor) -> None:
    t = caffenet.trunk
    x = images[:, [2, 1, 0]] * 255  # RGB [0, 1] in, Caffe's BGR [0, 255] to conv1
    x = _caffe_lrn(F.max_pool2d(F.relu(F.conv2d(x, t.conv1.weight, t.conv1.bias, stride=4)), 3, 2))
    x = F.relu(_grouped_conv(x, t.conv2.weight, t.conv2.bias, padding=2))
    expected = _caffe_lrn(F.max_pool2d(x, 3, 2))
    with torch.no_grad():
        got = caffenet.trunk_features(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_rank_embedding_is_unit_norm(caffenet: MTDNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        emb = caffenet(images)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_verify_logits_expose_pre_relu_fc7(caffenet: MTDNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        maps = caffenet.trunk_features(images)
        logits, fc7 = caffenet.verify_logits(maps, maps.flip(0), return_fc7=True)
        plain = caffenet.verify_logits(maps, maps.flip(0))
        head = caffenet.verifier
        # the same head written out: conv3 on the channel-concatenated maps ... fc8(relu(fc7))
        x = F.relu(head.conv3(torch.cat([maps, maps.flip(0)], dim=1)))
        x = F.relu(_grouped_conv(x, head.conv4.weight, head.conv4.bias, padding=1))
        x = F.relu(_grouped_conv(x, head.conv5.weight, head.conv5.bias, padding=1))
        fc7_ref = head.fc7(F.relu(head.fc6(F.max_pool2d(x, 3, 2).flatten(1))))
    assert logits.shape == (2, 2) and fc7.shape == (2, 4096)
    assert (fc7 < 0).any(), "fc7 must be taken before its ReLU"
    torch.testing.assert_close(fc7, fc7_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, head.fc8(F.relu(fc7)))
    torch.testing.assert_close(plain, logits)


def test_conv3_parts_sum_to_conv3(caffenet: MTDNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        maps = caffenet.trunk_features(images)
        first, _ = caffenet.verifier.conv3_parts(maps[:1])
        _, second = caffenet.verifier.conv3_parts(maps[1:])
        whole = caffenet.verifier.conv3(torch.cat([maps[:1], maps[1:]], dim=1))
    torch.testing.assert_close(first + second, whole, rtol=1e-4, atol=1e-4)


def test_wrong_input_size_names_the_fix(caffenet: MTDNet) -> None:
    with pytest.raises(ValueError, match="input_size"):
        caffenet(torch.rand(1, 3, 160, 80))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="caffenet"):
        MTDNet(trunk="alexnet")
    with pytest.raises(ValueError, match="mtd, trp, cls, rnk"):
        MTDNet(variant="both")


# losses -----------------------------------------------------------------------------------------

def test_squared_triplet_loss_by_hand() -> None:
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # squared distances 2 and 0
    negative = torch.tensor([[0.0, -1.0], [-1.0, 0.0]])  # squared distances 2 and 4
    # hinges: max(0, 1 + 2 - 2) = 1 and max(0, 1 + 0 - 4) = 0; sum / (2 * 2)
    assert squared_triplet_loss(anchor, positive, negative).item() == pytest.approx(0.25)
    assert squared_triplet_loss(anchor, positive, negative, margin=3.0).item() == pytest.approx(
        (3 + 0 + 0) / 4)


def test_contrastive_loss_by_hand() -> None:
    a = torch.zeros(2, 2)
    b = torch.tensor([[3.0, 4.0], [0.6, 0.0]])  # distances 5 and 0.6
    similar = torch.tensor([1, 0])
    # similar: d^2 = 25; dissimilar: (1 - 0.6)^2 = 0.16, legacy: 1 - 0.36 = 0.64; sum / (2 * 2)
    assert contrastive_loss(a, b, similar).item() == pytest.approx((25 + 0.16) / 4)
    assert contrastive_loss(a, b, similar, legacy=True).item() == pytest.approx((25 + 0.64) / 4)
    far = torch.tensor([[2.0, 0.0], [0.0, 1.5]])  # beyond the margin: no dissimilar cost
    assert contrastive_loss(a, far, torch.tensor([0, 0])).item() == 0.0


def test_contrastive_gradient_is_finite_for_identical_vectors() -> None:
    a = torch.ones(1, 3, requires_grad=True)
    contrastive_loss(a, a.detach().clone(), torch.tensor([0])).backward()
    assert torch.isfinite(a.grad).all()


def test_cross_domain_contrastive_by_hand() -> None:
    target_pos, target_neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    source_pos, source_neg = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    # after L2 normalisation: source_pos = (1, 0). Similar (same status) pairs: (tp, sp) d^2 = 0,
    # (tn, sn) d^2 = 0.36 + 0.04; dissimilar: (tp, sn) d = sqrt(0.8), (tn, sp) d = sqrt(2) > 1.
    expected = (0.0 + 0.4 + (1 - math.sqrt(0.8)) ** 2 + 0.0) / (2 * 4)
    got = cross_domain_contrastive_loss(target_pos, target_neg, source_pos, source_neg)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_verification_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    same = torch.tensor([1, 0])
    # p(same) = 3/4 for the first pair, p(different) = 1/2 for the second
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert verification_loss(logits, same).item() == pytest.approx(expected)
    torch.testing.assert_close(same_probability(logits), torch.tensor([0.75, 0.5]))


# training objective and variants ------------------------------------------------------------

@pytest.fixture(scope="module")
def triplets() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.rand(3, 2, 3, *SMALL, generator=torch.Generator().manual_seed(2)))


def test_mtdnet_loss_sums_triplet_and_verification(triplets) -> None:
    torch.manual_seed(0)
    model = MTDNet(input_size=SMALL).eval()
    out = model.forward_triplets(*triplets)
    terms = MTDNetLoss()(out)
    with torch.no_grad():
        a, p, n = (model(x) for x in triplets)
        ma, mp, mn = (model.trunk_features(x) for x in triplets)
        logits = torch.cat([model.verify_logits(ma, mp), model.verify_logits(ma, mn)])
    torch.testing.assert_close(terms["triplet"], squared_triplet_loss(a, p, n))
    torch.testing.assert_close(terms["verification"],
                               verification_loss(logits, torch.tensor([1, 1, 0, 0])))
    torch.testing.assert_close(terms["total"], terms["triplet"] + terms["verification"])
    weighted = MTDNetLoss(triplet_weight=0.5, verification_weight=2.0)(out)
    torch.testing.assert_close(weighted["total"],
                               0.5 * terms["triplet"] + 2.0 * terms["verification"])


def test_variants_drop_their_missing_task(triplets) -> None:
    cls = MTDNet(input_size=SMALL, variant="cls")
    rnk = MTDNet(input_size=SMALL, variant="rnk")
    assert cls.rank_fc is None and cls.spec.ranks_by == "pairs"
    assert rnk.verifier is None and rnk.spec.ranks_by == "embedding"
    assert set(MTDNetLoss()(cls.forward_triplets(*triplets))) == {"verification", "total"}
    assert set(MTDNetLoss()(rnk.forward_triplets(*triplets))) == {"triplet", "total"}
    with pytest.raises(ValueError, match="pair_ranking"):
        cls(triplets[0])
    with pytest.raises(ValueError, match="no term"):
        MTDNetLoss(verification_weight=0)(cls.forward_triplets(*triplets))


def test_cross_domain_trains_target_only(triplets) -> None:
    torch.manual_seed(0)
    model = MTDNet(input_size=SMALL)
    wrapper = CrossDomainMTDNet(model, model)  # one model as both: the source is a copy
    wrapper.train()
    assert not wrapper.source.training and wrapper.target.training
    assert all(not p.requires_grad for p in wrapper.source.parameters())
    assert all(p.requires_grad for p in wrapper.target.parameters())
    source_batch = tuple(t.flip(-1) for t in triplets)
    before_source = {k: v.clone() for k, v in wrapper.source.state_dict().items()}
    before_target = {k: v.clone() for k, v in wrapper.target.state_dict().items()}
    optimiser = torch.optim.SGD(wrapper.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    outputs = wrapper.forward_triplets(triplets, source_batch)
    terms = CrossDomainLoss()(outputs)
    expected = cross_domain_contrastive_loss(outputs.target.pos_fc7, outputs.target.neg_fc7,
                                             outputs.source_pos_fc7, outputs.source_neg_fc7)
    torch.testing.assert_close(terms["contrastive"], expected)
    torch.testing.assert_close(
        terms["total"], terms["triplet"] + terms["verification"] + terms["contrastive"])
    optimiser.zero_grad()
    terms["total"].backward()
    optimiser.step()

    for k, v in wrapper.source.state_dict().items():
        assert torch.equal(v, before_source[k]), k
    changed = [k for k, v in wrapper.target.state_dict().items()
               if not torch.equal(v, before_target[k])]
    assert {"trunk.conv1.weight", "rank_fc.weight", "verifier.fc8.weight"} <= set(changed)


# weights and config ------------------------------------------------------------------------------

def _caffenet_state(prefix1: str = "conv1", prefix2: str = "conv2") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {f"{prefix1}.weight": torch.randn(96, 3, 11, 11, generator=g),
            f"{prefix1}.bias": torch.randn(96, generator=g),
            f"{prefix2}.weight": torch.randn(256, 48, 5, 5, generator=g),
            f"{prefix2}.bias": torch.randn(256, generator=g)}


def test_load_caffenet_weights_by_name(tmp_path) -> None:
    model = MTDNet(input_size=SMALL)
    state = _caffenet_state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "c.pth")
    loaded = load_trunk_weights(model, tmp_path / "c.pth")
    assert loaded == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    for k, v in state.items():
        assert torch.equal(model.trunk.state_dict()[k], v)


def test_pretrained_option_reads_sequential_safetensors(tmp_path) -> None:
    state = _caffenet_state("features.0", "features.4")
    save_file(state, str(tmp_path / "c.safetensors"))
    model = MTDNet(input_size=SMALL, pretrained=tmp_path / "c.safetensors")
    assert torch.equal(model.trunk.conv2.weight, state["features.4.weight"])
    assert model.config["pretrained"] is None  # a checkpoint's weights replace these
    with pytest.raises(ValueError, match="pretrained=<path>"):
        MTDNet(input_size=SMALL, pretrained=True)


def test_torchvision_alexnet_is_refused_clearly(tmp_path) -> None:
    state = {"features.0.weight": torch.zeros(64, 3, 11, 11), "features.0.bias": torch.zeros(64),
             "features.3.weight": torch.zeros(192, 64, 5, 5), "features.3.bias": torch.zeros(192)}
    torch.save(state, tmp_path / "alexnet.pth")
    with pytest.raises(ValueError, match=r"96x3x11x11.*torchvision's alexnet"):
        load_trunk_weights(MTDNet(input_size=SMALL), tmp_path / "alexnet.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trunk_weights(MTDNet(input_size=SMALL), tmp_path / "missing.pth")


def test_load_torchvision_resnet_weights(tmp_path) -> None:
    from torchvision.models import resnet18

    reference = resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    model = MTDNet(trunk="resnet18", input_size=SMALL)
    loaded = load_trunk_weights(model, tmp_path / "r18.pth")
    assert "layer3.1.conv2.weight" in loaded and not any(k.startswith("neck") for k in loaded)
    assert torch.equal(model.trunk.layer2[0].conv1.weight, reference["layer2.0.conv1.weight"])
    reference["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)  # e.g. a ResNet-50 block
    torch.save(reference, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight: file \(64, 64, 1, 1\).*resnet18"):
        load_trunk_weights(model, tmp_path / "other.pth")


def test_config_round_trip(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = MTDNet(trunk="resnet18", rank_dim=64, input_size=(99, 83), variant="trp").eval()
    config = json.loads(json.dumps(model.config))  # as stored in a model file
    rebuilt = build_model(**config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 99, 83)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert rebuilt.config == model.config
    # the registry passes config entries (but the name) as options: MTDNet declares them all
    assert set(model.config) - {"name"} <= set(inspect.signature(MTDNet).parameters)
    assert model.map_shape == (256, 7, 6)
    assert model.config["caffe_input"] is False


def test_fc_width_narrows_the_verification_fcs_and_round_trips():
    model = build_model("mtdnet", trunk="caffenet", input_size=(67, 67), fc_width=64)
    assert model.verifier.fc6.out_features == 64 and model.verifier.fc7.weight.shape == (64, 64)
    assert model.verifier.fc8.in_features == 64
    assert build_model(**model.config).config == model.config
    with pytest.raises(ValueError, match="fc_width"):
        build_model("mtdnet", fc_width=0)


# ----------------------------------------------------------------------------- deep rnk, Caffe init
# Nets/MTDnet-rnk/train_val.prototxt (cwhgn/MTDnet): the whole CaffeNet on one image, fc8 -> 512
RNK_PROTOTXT_SHAPES = {
    "trunk.conv1.weight": (96, 3, 11, 11), "trunk.conv2.weight": (256, 48, 5, 5),
    "rank_head.conv3.weight": (384, 256, 3, 3), "rank_head.conv4.weight": (384, 192, 3, 3),
    "rank_head.conv5.weight": (256, 192, 3, 3), "rank_head.fc6.weight": (4096, 9216),
    "rank_head.fc7.weight": (4096, 4096), "rank_head.fc8.weight": (512, 4096),
}


@pytest.fixture(scope="module")
def rnk() -> MTDNet:
    torch.manual_seed(0)
    return MTDNet(variant="rnk", init="caffe").eval()


def test_rnk_is_the_whole_caffenet_of_the_prototxt(rnk: MTDNet) -> None:
    shapes = {k: tuple(v.shape) for k, v in rnk.state_dict().items() if k.endswith("weight")}
    assert shapes == RNK_PROTOTXT_SHAPES
    assert rnk.verifier is None and rnk.rank_fc is None and rnk.spec.ranks_by == "embedding"


def test_rnk_normalises_before_pooling_like_alexnet(rnk: MTDNet, images: torch.Tensor) -> None:
    t = rnk.trunk
    x = images[:1][:, [2, 1, 0]] * 255.0
    x = F.max_pool2d(_caffe_lrn(F.relu(t.conv1(x))), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_caffe_lrn(F.relu(_grouped_conv(x, t.conv2.weight, t.conv2.bias, padding=2))),
                     3, 2, ceil_mode=True)
    torch.testing.assert_close(rnk.trunk_features(images[:1]), x, rtol=1e-4, atol=1e-4)
    emb = rnk(images)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize(("variant", "fillers"), [
    # (layer, weight std, bias) from the two prototxts' weight_filler / bias_filler
    ("mtd", {"trunk.conv1": (0.01, 0.0), "trunk.conv2": (0.01, 0.0), "rank_fc": (0.005, 0.1),
             "verifier.conv3": (0.01, 0.0), "verifier.conv5": (0.01, 0.0),
             "verifier.fc6": (0.005, 0.0), "verifier.fc7": (0.005, 0.0), "verifier.fc8": (0.01, 0.0)}),
    ("rnk", {"trunk.conv1": (0.01, 0.0), "trunk.conv2": (0.01, 0.1), "rank_head.conv3": (0.01, 0.0),
             "rank_head.conv4": (0.01, 0.1), "rank_head.fc6": (0.005, 0.1),
             "rank_head.fc8": (0.005, 0.1)}),
])
def test_caffe_init_follows_the_prototxt_fillers(variant: str, fillers: dict) -> None:
    torch.manual_seed(0)
    model = MTDNet(input_size=(128, 72), variant=variant, init="caffe", fc_width=512)
    modules = dict(model.named_modules())
    for name, (std, bias) in fillers.items():
        weight = modules[name].weight
        assert abs(weight.mean().item()) < 4 * std / math.sqrt(weight.numel()) + 1e-6
        assert weight.std().item() == pytest.approx(std, rel=0.1)
        assert torch.all(modules[name].bias == bias)


def test_rnk_starts_from_all_of_caffenet(tmp_path) -> None:
    g = torch.Generator().manual_seed(4)
    state = _caffenet_state()
    for name, shape in RNK_PROTOTXT_SHAPES.items():
        layer = name.split(".")[1]
        if layer not in ("conv1", "conv2", "fc8"):
            state[f"{layer}.weight"] = torch.randn(shape, generator=g)
            state[f"{layer}.bias"] = torch.randn(shape[0], generator=g)
    save_file(state, str(tmp_path / "caffenet.safetensors"))
    model = MTDNet(variant="rnk", pretrained=tmp_path / "caffenet.safetensors")
    for layer in ("conv3", "conv4", "conv5", "fc6", "fc7"):
        assert torch.equal(model.rank_head.state_dict()[f"{layer}.weight"], state[f"{layer}.weight"])
    assert torch.equal(model.trunk.conv2.weight, state["conv2.weight"])
    small = MTDNet(variant="rnk", input_size=(128, 72))
    with pytest.raises(ValueError, match="fc6 expects 227x227"):
        load_trunk_weights(small, tmp_path / "caffenet.safetensors")


def test_shallow_ranking_network_keeps_its_name() -> None:
    model = MTDNet(input_size=SMALL, variant="rnk-shallow")
    assert model.rank_fc is not None and model.rank_head is None and model.verifier is None


def test_indexed_contrastive_pairs_target_k_with_source_k_mod_n() -> None:
    from reidkit.losses.contrastive import indexed_contrastive_loss

    target_pos, target_neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    source, same = torch.tensor([[0.6, 0.8]]), torch.tensor([0])  # one negative source pair
    # positive target pair vs negative source pair: dissimilar, d = sqrt(0.16 + 0.64) < 1;
    # negative target pair vs it: similar, d^2 = 0.36 + 0.04
    expected = ((1 - math.sqrt(0.8)) ** 2 + 0.4) / (2 * 2)
    got = indexed_contrastive_loss(target_pos, target_neg, source, same)
    assert got.item() == pytest.approx(expected, rel=1e-5)
