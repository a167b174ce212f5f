"""k-reciprocal re-ranking against a literal transcription of the reference algorithm."""

import numpy as np
import pytest
import torch

from reidkit.evaluation.rerank import re_rank, re_rank_features


def reference_re_rank(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """The person-re-ranking / torchreid ``re_ranking`` steps, literally, on dense (Q+G)^2."""
    num_q = q_g.shape[0]
    num = num_q + q_g.shape[1]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    dist = np.square(full).astype(np.float32)
    dist = (dist / dist.max(axis=0)).T  # row i: column i of the squared matrix over its max
    order = np.argsort(dist, axis=1)

    def reciprocal(i, k):
        fwd = order[i, : k + 1]
        return np.array([c for c in fwd if i in order[c, : k + 1]], dtype=np.int64)

    half = int(np.around(k1 / 2.0))
    enc = np.zeros((num, num), dtype=np.float32)
    for i in range(num):
        recip = reciprocal(i, k1)
        expanded = list(recip)
        for c in recip:
            cand = reciprocal(c, half)
            if len(np.intersect1d(cand, recip)) > 2.0 / 3 * len(cand):
                expanded.extend(cand)
        expanded = np.unique(np.array(expanded, dtype=np.int64))
        weight = np.exp(-dist[i, expanded])
        enc[i, expanded] = weight / weight.sum()
    if k2 != 1:
        enc = np.stack([enc[order[i, :k2]].mean(axis=0) for i in range(num)])
    jaccard = np.zeros((num_q, num), dtype=np.float32)
    for i in range(num_q):
        shared = np.minimum(enc[i][None, :], enc).sum(axis=1)
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]


def euclidean(a, b):
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def clustered(num_q, num_g, dim, seed, num_ids=12):
    """Identities as Gaussian clusters, so that reciprocal sets and expansions are non-trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    q = centres[rng.integers(num_ids, size=num_q)] + 0.6 * rng.normal(size=(num_q, dim))
    g = centres[rng.integers(num_ids, size=num_g)] + 0.6 * rng.normal(size=(num_g, dim))
    return q, g


def blocks(q, g, dtype=np.float32):
    return (
        euclidean(q, g).astype(dtype),
        euclidean(q, q).astype(dtype),
        euclidean(g, g).astype(dtype),
    )


@pytest.mark.parametrize(
    ("num_q", "num_g", "k1", "k2", "lam", "seed"),
    [
        (20, 100, 20, 6, 0.3, 0),
        (40, 180, 20, 6, 0.3, 1),
        (60, 300, 20, 6, 0.3, 2),
        (30, 150, 10, 3, 0.5, 3),
        (25, 120, 5, 1, 0.0, 4),  # k2 = 1: no query expansion; k1 odd: round(2.5) = 2
        (20, 100, 7, 10, 1.0, 5),  # k2 > k1 + 1
        (10, 15, 30, 40, 0.3, 6),  # k1 + 1 and k2 exceed Q + G
    ],
)
def test_matches_reference(num_q, num_g, k1, k2, lam, seed):
    q_g, q_q, g_g = blocks(*clustered(num_q, num_g, 16, seed))
    expected = reference_re_rank(q_g, q_q, g_g, k1, k2, lam)
    got = re_rank(q_g, q_q, g_g, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == (num_q, num_g)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_matches_reference_with_tiny_memory_budget_and_float64_input():
    """A budget of a few kB forces one-row chunks in every stage; float64 is squared before
    the cast, as in the reference."""
    q_g, q_q, g_g = blocks(*clustered(30, 120, 8, 7), dtype=np.float64)
    expected = reference_re_rank(q_g, q_q, g_g)
    got = re_rank(q_g, q_q, g_g, max_memory_gb=4e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_matches_reference_on_asymmetric_blocks():
    """The reference reads column i of the stacked matrix as row i; blocks need not be symmetric."""
    rng = np.random.default_rng(8)
    q_g, q_q, g_g = (
        rng.uniform(0.1, 2.0, size=s).astype(np.float32) for s in ((15, 70), (15, 15), (70, 70))
    )
    expected = reference_re_rank(q_g, q_q, g_g, 8, 4, 0.3)
    np.testing.assert_allclose(re_rank(q_g, q_q, g_g, 8, 4, 0.3), expected, rtol=1e-5, atol=1e-6)


def test_hand_computed_two_points():
    """One query, one gallery item at distance 2, k1=1, k2=1.

    Squared matrix [[0, 4], [4, 0]], normalised by its column max 4: [[0, 1], [1, 0]]. Each point's
    two nearest are itself and the other, so both are mutually reciprocal; the half sets
    (round(0.5) + 1 = 1 nearest) are the points themselves and overlap fully, adding nothing.
    V = [[1, e^-1], [e^-1, 1]] / (1 + e^-1); shared mass s = 2 e^-1 / (1 + e^-1);
    jaccard = 1 - s / (2 - s); result = 0.7 * jaccard + 0.3 * 1.
    """
    e = np.exp(-1.0)
    s = 2 * e / (1 + e)
    expected = 0.7 * (1 - s / (2 - s)) + 0.3
    got = re_rank(np.array([[2.0]]), np.array([[0.0]]), np.array([[0.0]]), k1=1, k2=1)
    np.testing.assert_allclose(got, [[expected]], rtol=1e-6)


def test_lambda_one_is_normalised_squared_distance():
    q_g, q_q, g_g = blocks(*clustered(10, 40, 4, 9))
    col_max = np.maximum((q_q**2).max(axis=0), (q_g**2).max(axis=1))
    np.testing.assert_allclose(
        re_rank(q_g, q_q, g_g, lambda_value=1.0), q_g**2 / col_max[:, None], rtol=1e-6
    )


def mean_ap(dist, q_pids, g_pids):
    aps = []
    for row, pid in zip(dist, q_pids, strict=True):
        hits = np.flatnonzero(g_pids[np.argsort(row)] == pid)
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
    return float(np.mean(aps))


def test_re_ranking_raises_map_on_clustered_identities():
    """What the method is for: neighbours shared within an identity outweigh raw distance."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 32))
    q_pids, g_pids = rng.integers(30, size=60), rng.integers(30, size=300)
    q = centres[q_pids] + 0.9 * rng.normal(size=(60, 32))
    g = centres[g_pids] + 0.9 * rng.normal(size=(300, 32))
    q_g, q_q, g_g = blocks(q, g, dtype=np.float64)
    before = mean_ap(q_g, q_pids, g_pids)
    after = mean_ap(re_rank(q_g, q_q, g_g), q_pids, g_pids)
    assert before < 0.9 and after > before + 0.1


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_equal_distance_blocks(metric):
    q, g = clustered(25, 110, 32, 11)
    if metric == "euclidean":
        expected = re_rank(*blocks(q, g, dtype=np.float64))
    else:
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        expected = re_rank(1 - qn @ gn.T, 1 - qn @ qn.T, 1 - gn @ gn.T)
    got = re_rank_features(
        q.astype(np.float32), torch.from_numpy(g), metric=metric, max_memory_gb=1e-4
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_approximate_features_close_to_exact():
    """With 128-d features the 64-d shortlist still finds almost every true neighbour."""
    q, g = clustered(30, 200, 128, 12, num_ids=20)
    exact = re_rank_features(q, g)
    approx = re_rank_features(q, g, approximate=True)
    assert approx.shape == exact.shape
    assert not np.array_equal(approx, exact)  # gallery maxima are estimated, so values move
    top_exact = np.argsort(exact, axis=1)[:, :5]
    top_approx = np.argsort(approx, axis=1)[:, :5]
    agreement = np.mean(
        [len(np.intersect1d(a, b)) / 5 for a, b in zip(top_exact, top_approx, strict=True)]
    )
    assert agreement > 0.95
    np.testing.assert_allclose(approx, exact, atol=1e-3)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (((3, 5), (3, 3), (4, 4)), {}, "g_g_dist has shape"),
        (((3, 5), (2, 2), (5, 5)), {}, "q_q_dist has shape"),
        (((3,), (3, 3), (5, 5)), {}, "non-empty 2-D"),
        (((0, 5), (0, 0), (5, 5)), {}, "non-empty 2-D"),
        (((3, 5), (3, 3), (5, 5)), {"k1": 0}, "k1 must be an integer >= 1"),
        (((3, 5), (3, 3), (5, 5)), {"k1": 2.5}, "k1 must be an integer >= 1"),
        (((3, 5), (3, 3), (5, 5)), {"k2": 0}, "k2 must be an integer >= 1"),
        (((3, 5), (3, 3), (5, 5)), {"lambda_value": 1.5}, r"lambda_value must lie in \[0, 1\]"),
        (((3, 5), (3, 3), (5, 5)), {"lambda_value": -0.1}, r"lambda_value must lie in \[0, 1\]"),
        (((3, 5), (3, 3), (5, 5)), {"max_memory_gb": 0}, "max_memory_gb must be positive"),
    ],
)
def test_rejects_bad_arguments(args, kwargs, message):
    arrays = [np.ones(shape, dtype=np.float32) for shape in args]
    with pytest.raises(ValueError, match=message):
        re_rank(*arrays, **kwargs)


def test_features_reject_bad_arguments():
    with pytest.raises(ValueError, match="extract both with the same model"):
        re_rank_features(np.ones((2, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="unknown metric"):
        re_rank_features(np.ones((2, 4)), np.ones((3, 4)), metric="manhattan")


def test_explicit_cpu_device_is_the_same_code_path():
    """device= runs the dense stages through torch on that device; on the CPU the result is the
    default's, bit for bit, for matrices and for features (numpy or tensor)."""
    q, g = clustered(20, 90, 16, 13)
    q_g, q_q, g_g = blocks(q, g)
    np.testing.assert_array_equal(re_rank(q_g, q_q, g_g, device="cpu"), re_rank(q_g, q_q, g_g))
    expected = re_rank_features(q, g)
    for kwargs in ({"device": "cpu"}, {"device": torch.device("cpu"), "max_memory_gb": 1e-4}):
        np.testing.assert_array_equal(
            re_rank_features(torch.from_numpy(q), torch.from_numpy(g), **kwargs), expected)
    np.testing.assert_array_equal(re_rank_features(q, g, approximate=True, device="cpu"),
                                  re_rank_features(q, g, approximate=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu_to_float32_rounding():
    q, g = clustered(30, 150, 32, 14)
    q_g, q_q, g_g = blocks(q, g)
    np.testing.assert_allclose(re_rank(q_g, q_q, g_g, device="cuda"), re_rank(q_g, q_q, g_g),
                               rtol=1e-5, atol=1e-6)
    on_gpu = re_rank_features(torch.from_numpy(q).cuda(), torch.from_numpy(g).cuda())
    np.testing.assert_allclose(on_gpu, re_rank_features(q, g), rtol=1e-4, atol=1e-5)
