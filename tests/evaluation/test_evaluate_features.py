"""evaluate_features: streamed blocks give exactly evaluate_rank of the full distance matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.evaluation import compute_distance, evaluate_features, evaluate_rank


def integer_problem(rng, num_q=37, num_g=230, dim=6, num_ids=9, num_cams=3):
    """Small-integer features: every distance is exact in float32, many are tied; pids include
    junk (-1) and distractors (0) in the gallery."""
    gf = rng.integers(-2, 3, (num_g, dim)).astype(np.float32)
    g_pids = rng.integers(-1, num_ids, num_g)
    g_cams = rng.integers(0, num_cams, num_g)
    q_pids = rng.integers(1, num_ids, num_q)
    q_cams = rng.integers(0, num_cams, num_q)
    # Queries near a gallery item of their identity, so that the metrics are far from zero.
    source = np.array([rng.choice(np.flatnonzero(g_pids == p)) if (g_pids == p).any() else 0
                       for p in q_pids])
    qf = gf[source] + rng.integers(-1, 2, (num_q, dim)).astype(np.float32)
    q_pids[-1] = 99  # an identity the gallery lacks: skipped
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def assert_same(a, b):
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert (a.mAP, a.mINP, a.num_valid_queries, a.num_queries) == (
        b.mAP, b.mINP, b.num_valid_queries, b.num_queries)


@pytest.mark.parametrize("protocol", ["market1501", "cuhk03"])
@pytest.mark.parametrize("ap", ["standard", "official"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("query_block", [1, 5, None])
def test_equals_full_matrix_with_ties_junk_and_distractors(protocol, ap, metric, query_block):
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(3))
    dist = compute_distance(qf, gf, metric=metric)
    assert len(np.unique(dist)) < dist.size / 20  # heavily tied
    full = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, protocol=protocol, ap=ap,
                         repeats=3, seed=7)
    streamed = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, max_rank=20,
                                 protocol=protocol, ap=ap, repeats=3, seed=7, query_block=query_block)
    assert_same(streamed, full)
    assert 0.1 < full.mAP < 1.0 and full.num_valid_queries < full.num_queries


def test_cosine_on_random_features_and_tiny_memory_budget():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 20, 50), rng.integers(-1, 20, 300)
    q_cams, g_cams = rng.integers(0, 4, 50), rng.integers(0, 4, 300)
    full = evaluate_rank(compute_distance(qf, gf, metric="cosine"), q_pids, g_pids, q_cams, g_cams)
    # 1e-5 GB = 10 kB: a block of 2 queries.
    streamed = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="cosine",
                                 max_memory_gb=1e-5)
    assert_same(streamed, full)


def test_hand_computed_case_from_features():
    # 1-d features: query 0 at 0, gallery at 1, 2, 3, 4 (distances 1, 2, 3, 4).
    qf = np.array([[0.0]], dtype=np.float32)
    gf = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    g_pids, g_cams = np.array([5, 0, 7, 7]), np.array([1, 1, 1, 0])
    # g0 is another identity, g1 a distractor, g3 is in the query's camera -> kept order g0 g1 g2*
    res = evaluate_features(qf, gf, [7], g_pids, [0], g_cams, max_rank=3)
    np.testing.assert_allclose(res.cmc, [0, 0, 1])
    assert res.mAP == pytest.approx(1 / 3) and res.mINP == pytest.approx(1 / 3)


def test_memory_mapped_float16_gallery(tmp_path):
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(5), num_g=400)
    np.save(tmp_path / "gallery.npy", gf.astype(np.float16))  # small integers: exact in float16
    mapped = np.load(tmp_path / "gallery.npy", mmap_mode="r")
    full = evaluate_rank(compute_distance(qf, gf), q_pids, g_pids, q_cams, g_cams)
    streamed = evaluate_features(qf, mapped, q_pids, g_pids, q_cams, g_cams, query_block=8)
    assert_same(streamed, full)


def test_torch_tensors_on_an_explicit_device_and_float64():
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(9))
    full = evaluate_rank(compute_distance(qf, gf), q_pids, g_pids, q_cams, g_cams)
    on_device = evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), torch.from_numpy(q_pids),
                                  g_pids, q_cams, g_cams, device="cpu")
    float64 = evaluate_features(qf.astype(np.float64), gf, q_pids, g_pids, q_cams, g_cams)
    assert_same(on_device, full)
    assert_same(float64, full)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_equals_cpu():
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(9))
    cpu = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    cuda = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, device="cuda")
    assert_same(cuda, cpu)


def test_progress_callback_counts_every_query():
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(1))
    seen = []
    evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, query_block=10, progress=seen.append)
    assert seen == [10, 10, 10, 7]
    evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, progress=True)  # a bar on stderr


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "manhattan"}, "unknown metric"),
    ({"max_memory_gb": 0}, "max_memory_gb"),
    ({"query_block": 0}, "query_block"),
    ({"protocol": "viper"}, "unknown protocol"),
])
def test_bad_options_are_named(kwargs, message):
    qf, gf, q_pids, g_pids, q_cams, g_cams = integer_problem(np.random.default_rng(1))
    with pytest.raises(ValueError, match=message):
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, **kwargs)


def test_bad_features_are_named():
    gf = np.zeros((4, 3), dtype=np.float32)
    labels = ([1], [1, 1, 1, 1], [0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="same model"):
        evaluate_features(np.zeros((1, 2), np.float32), gf, *labels)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_features(np.zeros(3, np.float32), gf, *labels)
    with pytest.raises(TypeError, match="floating-point"):
        evaluate_features(np.zeros((1, 3), np.int64), gf, *labels)
    with pytest.raises(ValueError, match="len\\(g_pids\\)"):
        evaluate_features(np.zeros((1, 3), np.float32), gf, [1], [1, 1], [0], [1, 1])
