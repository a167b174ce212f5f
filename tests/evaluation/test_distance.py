"""compute_distance against the direct formulas, in and out of chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.evaluation import compute_distance


def direct(qf: np.ndarray, gf: np.ndarray, metric: str) -> np.ndarray:
    qf, gf = qf.astype(np.float64), gf.astype(np.float64)
    if metric == "cosine":
        qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        return 1.0 - qn @ gn.T
    diff = qf[:, None, :] - gf[None, :, :]
    sq = (diff**2).sum(axis=2)
    return sq if metric == "sqeuclidean" else np.sqrt(sq)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return rng.normal(size=(13, 16)).astype(np.float32), rng.normal(size=(29, 16)).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 1, 4, 100])
def test_matches_direct_formula(features, metric, chunk_size):
    qf, gf = features
    out = compute_distance(qf, gf, metric=metric, chunk_size=chunk_size)
    assert out.dtype == np.float32 and out.shape == (13, 29)
    np.testing.assert_allclose(out, direct(qf, gf, metric), rtol=1e-5, atol=1e-5)


def test_torch_inputs_and_float64_precision(features):
    qf, gf = features
    from_torch = compute_distance(torch.from_numpy(qf), torch.from_numpy(gf), chunk_size=5)
    np.testing.assert_array_equal(from_torch, compute_distance(qf, gf, chunk_size=5))
    q64, g64 = qf.astype(np.float64), gf.astype(np.float64)
    exact = direct(q64, g64, "euclidean").astype(np.float32)
    np.testing.assert_allclose(compute_distance(q64, g64), exact, rtol=1e-6)


def test_identical_vectors_are_at_distance_zero_never_negative():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 64)).astype(np.float32) * 100
    sq = compute_distance(x, x, metric="sqeuclidean")
    assert sq.min() >= 0.0  # the float32 expansion cancels to slightly negative values unclamped
    dist = compute_distance(x, x)
    assert not np.isnan(dist).any()
    assert np.diag(dist).max() < 1e-3 * np.median(dist)


def test_cosine_of_zero_vector_is_one():
    out = compute_distance(np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]),
                           metric="cosine")
    np.testing.assert_allclose(out, [[1.0, 1.0]])


def test_empty_gallery_gives_empty_matrix(features):
    qf, _ = features
    assert compute_distance(qf, np.zeros((0, 16), dtype=np.float32)).shape == (13, 0)


def test_errors_are_clear(features):
    qf, gf = features
    with pytest.raises(ValueError, match="same feature dimension"):
        compute_distance(qf, gf[:, :8])
    with pytest.raises(ValueError, match="2-D"):
        compute_distance(qf[0], gf)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        compute_distance(qf, gf, metric="manhattan")
    with pytest.raises(ValueError, match="chunk_size"):
        compute_distance(qf, gf, chunk_size=0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_explicit_device_runs_the_same_code_path(features, metric):
    qf, gf = features
    on_cpu = compute_distance(torch.from_numpy(qf), gf, metric=metric, device="cpu", chunk_size=4)
    np.testing.assert_array_equal(on_cpu, compute_distance(qf, gf, metric=metric, chunk_size=4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_cuda_equals_cpu_to_float32_rounding(features, metric):
    qf, gf = features
    np.testing.assert_allclose(compute_distance(qf, gf, metric=metric, device="cuda"),
                               compute_distance(qf, gf, metric=metric), rtol=1e-5, atol=1e-5)
