"""Gallery ranking by MTDnet pair scores against a per-pair-from-pixels reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.losses.verification import same_probability
from reidkit.models.mtdnet import MTDNet
from reidkit.retrieval.pair_ranking import pair_distance_matrix, pair_score_matrix

SIZE = (67, 67)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, *SIZE, generator=g), torch.rand(3, 3, *SIZE, generator=g)


@pytest.fixture(scope="module")
def model(data) -> MTDNet:
    torch.manual_seed(0)
    net = MTDNet(input_size=SIZE).eval()
    # A random net's "same" logit margins vary by ~0.05 around an offset: stretch and centre them
    # so that the scores spread over (0, 1) and a wrong pass or pairing shows.
    with torch.no_grad():
        net.verifier.fc8.weight.mul_(50)
        maps = net.trunk_features(torch.cat(data))
        logits = net.verify_logits(maps[:-1], maps[1:])
        net.verifier.fc8.bias[1] -= (logits[:, 1] - logits[:, 0]).mean()
    return net.train()


def _score_from_pixels(model: MTDNet, q: torch.Tensor, g: torch.Tensor,
                       passes: int = 8) -> float:
    """One pair straight from its pixels: the passes' image pairs through the whole net."""
    qm, gm = q.flip(-1), g.flip(-1)
    orders = [(q, g), (g, q), (qm, g), (g, qm), (q, gm), (gm, q), (qm, gm), (gm, qm)][:passes]
    first = torch.stack([a for a, _ in orders])
    second = torch.stack([b for _, b in orders])
    with torch.no_grad():
        logits = model.verify_logits(model.trunk_features(first), model.trunk_features(second))
    return same_probability(logits).mean().item()


def test_equals_per_pair_reference(model: MTDNet, data) -> None:
    queries, gallery = data
    got = pair_score_matrix(model, queries, gallery, batch_size=2, progress=False)
    model.eval()
    expected = np.array([[_score_from_pixels(model, q, g) for g in gallery] for q in queries])
    single = np.array([[_score_from_pixels(model, q, g, passes=1) for g in gallery]
                       for q in queries])
    model.train()
    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.std() > 0.01, "scores must vary for the comparison to mean anything"
    assert np.abs(single - expected).max() > 1e-3, "the 8 passes must differ from one"


def test_restores_training_mode_and_accepts_loaders(model: MTDNet, data) -> None:
    queries, gallery = data
    from_tensors = pair_score_matrix(model, queries, gallery, progress=False)
    assert model.training
    loader = [(gallery[:2], torch.tensor([0, 1])), (gallery[2:], torch.tensor([2]))]
    from_loader = pair_score_matrix(model, [queries], loader, batch_size=5, progress=False)
    np.testing.assert_allclose(from_loader, from_tensors, atol=1e-6)


def test_swapping_roles_transposes(model: MTDNet, data) -> None:
    queries, gallery = data
    forward = pair_score_matrix(model, queries, gallery, progress=False)
    swapped = pair_score_matrix(model, gallery, queries, progress=False)
    np.testing.assert_allclose(swapped, forward.T, atol=1e-6)


def test_distance_is_one_minus_score(model: MTDNet, data) -> None:
    queries, gallery = data
    scores = pair_score_matrix(model, queries, gallery, progress=False)
    dist = pair_distance_matrix(model, queries, gallery, progress=True)
    np.testing.assert_allclose(dist, 1 - scores, atol=1e-6)
    assert ((scores > 0) & (scores < 1)).all()


def test_refuses_models_without_a_verifier(data) -> None:
    with pytest.raises(ValueError, match="embedding distances"):
        pair_score_matrix(MTDNet(input_size=SIZE, variant="rnk"), *data, progress=False)
    with pytest.raises(ValueError, match="no queries"):
        pair_score_matrix(MTDNet(input_size=SIZE, variant="cls"), [], data[1], progress=False)
