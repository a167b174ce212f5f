import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import (
    CrossEntropyLabelSmooth,
    TripletLoss,
    batch_hard_triplet,
    cross_entropy,
    id_loss,
    pairwise_distances,
)

# Four points on a line, identities A A B B. Distances: d01=1 d02=3 d03=7 d12=2 d13=6 d23=4.
# Hardest (positive, negative) per anchor: 0 -> (1, 3), 1 -> (1, 2), 2 -> (4, 2), 3 -> (4, 6).
LINE = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
LINE_IDS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_by_hand():
    result = TripletLoss(margin=1.4)(LINE, LINE_IDS)
    # relu(1-3+1.4)=0, relu(1-2+1.4)=0.4, relu(4-2+1.4)=3.4, relu(4-6+1.4)=0
    assert result.loss.item() == pytest.approx((0.4 + 3.4) / 4, abs=1e-5)
    assert result.num_valid == 4
    assert result.precision == pytest.approx(3 / 4)  # anchor 2's negative is nearer


def test_soft_margin_by_hand():
    result = TripletLoss(soft_margin=True)(LINE, LINE_IDS)
    softplus = [math.log1p(math.exp(g)) for g in (1 - 3, 1 - 2, 4 - 2, 4 - 6)]
    assert result.loss.item() == pytest.approx(sum(softplus) / 4, abs=1e-5)


def test_normalize_by_hand():
    # Normalised: (1,0) (1,0) (0,1) (0,-1): d01=0, every A-B pair sqrt(2), d23=2.
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, -5.0]])
    result = TripletLoss(margin=2.0, normalize=True)(feats, LINE_IDS)
    s = math.sqrt(2)
    expected = (2 * (0 - s + 2) + 2 * (2 - s + 2)) / 4
    assert result.loss.item() == pytest.approx(expected, abs=1e-5)
    unnormalized = TripletLoss(margin=2.0)(feats, LINE_IDS)
    assert unnormalized.loss.item() != pytest.approx(expected, abs=1e-2)


def test_matches_straightforward_reference():
    torch.manual_seed(0)
    feats = torch.randn(12, 5)
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])  # pid 3 has no positive
    margin = 0.5
    losses, correct = [], 0
    for a in range(12):
        pos = [(feats[a] - feats[j]).norm().item() for j in range(12) if ids[j] == ids[a] and j != a]
        neg = [(feats[a] - feats[j]).norm().item() for j in range(12) if ids[j] != ids[a]]
        if not pos:
            continue
        losses.append(max(0.0, max(pos) - min(neg) + margin))
        correct += int(max(pos) < min(neg))
    result = batch_hard_triplet(feats, ids, margin=margin)
    assert result.num_valid == 11
    assert result.loss.item() == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert result.precision == pytest.approx(correct / 11)


@pytest.mark.parametrize("ids", [[3, 3, 3, 3], [0, 1, 2, 3]])
def test_no_valid_triplet_gives_flagged_graph_zero(ids):
    feats = torch.randn(4, 8, requires_grad=True)
    result = TripletLoss()(feats, torch.tensor(ids))
    assert result.num_valid == 0
    assert result.precision == 0.0
    assert result.loss.item() == 0.0
    result.loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_identical_features_have_finite_gradients():
    feats = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [4.0, 0.0]], requires_grad=True)
    result = TripletLoss(margin=1.0)(feats, torch.tensor([0, 0, 1, 1]))
    result.loss.backward()
    assert torch.isfinite(feats.grad).all()
    assert result.loss.item() > 0  # anchor 0's negative (2) sits on it: loss = margin


def test_pairwise_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pairwise_distances(x)
    assert d[0, 1].item() == pytest.approx(5.0)
    assert d[0, 0].item() == pytest.approx(1e-6)  # clamped, not 0: keeps sqrt's gradient finite


def test_half_precision_features_computed_in_float32():
    result = TripletLoss(margin=1.4)(LINE.half(), LINE_IDS)
    assert result.loss.dtype == torch.float32
    assert result.loss.item() == pytest.approx(0.95, abs=1e-5)


def test_label_smoothing_matches_formula():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    eps, k, target = 0.1, 3, 2
    logp = [v - math.log(sum(math.exp(u) for u in (1.0, 2.0, 3.0))) for v in (1.0, 2.0, 3.0)]
    expected = -((1 - eps) * logp[target] + eps / k * sum(logp))
    got = cross_entropy(logits, torch.tensor([target]), label_smoothing=eps)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert cross_entropy(logits, torch.tensor([target])).item() == pytest.approx(-logp[target])


def test_id_loss_sums_branches():
    torch.manual_seed(0)
    targets = torch.tensor([0, 2, 1])
    branches = [torch.randn(3, 4) for _ in range(3)]
    expected = sum(F.cross_entropy(b, targets, label_smoothing=0.1).item() for b in branches)
    assert id_loss(branches, targets, 0.1).item() == pytest.approx(expected, abs=1e-6)
    module = CrossEntropyLabelSmooth(0.1)
    assert module(branches, targets).item() == pytest.approx(expected, abs=1e-6)
    assert module(branches[0], targets).item() == pytest.approx(
        F.cross_entropy(branches[0], targets, label_smoothing=0.1).item(), abs=1e-6)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(torch.zeros(1, 2), torch.tensor([0]), label_smoothing=1.0)
    with pytest.raises(ValueError, match="at least one"):
        id_loss([], torch.tensor([0]))
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-1.0)
