"""evaluate_rank against hand-computed cases and straightforward per-query reference evaluators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.evaluation import RankResult, evaluate_rank


def reference_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap="standard"):
    """Per-query evaluator in the style of torchreid / the Market-1501 MATLAB code.

    Sorts each row with a stable argsort (ties by gallery index, the rule evaluate_rank documents),
    drops junk and same-pid-same-camera items, and walks the ranked list.
    """
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        removed = ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])) | (
            g_pids[order] == -1)
        good = g_pids[order][~removed] == q_pids[i]
        if not good.any():
            continue
        cmc = np.zeros(max_rank)
        cmc[np.argmax(good):] = 1
        all_cmc.append(cmc)
        if ap == "standard":
            hits = np.cumsum(good)
            all_ap.append(np.sum(hits / np.arange(1, len(good) + 1) * good) / good.sum())
        else:  # the loop of Market-1501's compute_AP.m
            value, old_recall, old_precision, found = 0.0, 0.0, 1.0, 0
            for n, is_good in enumerate(good):
                found += int(is_good)
                recall, precision = found / good.sum(), found / (n + 1)
                value += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
            all_ap.append(value)
        positions = np.flatnonzero(good)
        all_inp.append(len(positions) / (positions[-1] + 1))
    return np.mean(all_cmc, axis=0), np.mean(all_ap), np.mean(all_inp), len(all_ap)


def reference_cuhk03_cmc(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, repeats, seed):
    """Single-gallery-shot CMC with the sampling evaluate_rank documents, one query at a time."""
    rng = np.random.default_rng(seed)
    ids = np.unique(g_pids[g_pids != -1])
    all_cmc = []
    for i in range(len(q_pids)):
        u = rng.random((repeats, len(ids)), dtype=np.float32)
        candidates = []
        for pid in ids:
            items = np.flatnonzero(g_pids == pid)
            if pid == q_pids[i]:
                items = items[g_camids[items] != q_camids[i]]
            candidates.append(items)
        if q_pids[i] not in ids or len(candidates[np.searchsorted(ids, q_pids[i])]) == 0:
            continue
        cmc = np.zeros(max_rank)
        for r in range(repeats):
            drawn = np.sort([items[int(u[r, k] * len(items))] for k, items in enumerate(candidates)])
            ranked = drawn[np.argsort(distmat[i, drawn], kind="stable")]
            first = np.flatnonzero(g_pids[ranked] == q_pids[i])[0]
            cmc[first:] += 1 / repeats
        all_cmc.append(cmc)
    return np.mean(all_cmc, axis=0)


def random_problem(rng, num_q, num_g, num_ids=8, num_cams=3, ties=False):
    g_pids = rng.integers(-1, num_ids, num_g)  # -1 junk, 0 distractor-like ids included
    q_pids = rng.integers(1, num_ids, num_q)
    g_camids = rng.integers(0, num_cams, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    g_pids[0], g_camids[0] = q_pids[0], (q_camids[0] + 1) % num_cams  # at least one valid query
    distmat = rng.random((num_q, num_g)).astype(np.float32)
    if ties:
        distmat = np.round(distmat * 4) / 4
    return distmat, q_pids, g_pids, q_camids, g_camids


# Gallery of the hand-computed case: (pid, camid) per item.
#   0: (1, 0)  1: (1, 1)  2: (2, 1)  3: (-1, 1) junk  4: (0, 2) distractor  5: (1, 2)  6: (3, 0)
HAND_G_PIDS = np.array([1, 1, 2, -1, 0, 1, 3])
HAND_G_CAMS = np.array([0, 1, 1, 1, 2, 2, 0])
HAND_Q_PIDS = np.array([1, 2, 3, 1])
HAND_Q_CAMS = np.array([0, 0, 0, 1])
HAND_DIST = np.array([
    # q0 kept order: g2 g4 g6 g1* g5*  (g3 junk, g0 same camera)  -> hits at ranks 4 and 5
    [0.10, 0.50, 0.20, 0.05, 0.30, 0.90, 0.40],
    # q1 kept order: g4 g2* ...  (distractor first)                -> hit at rank 2
    [0.30, 0.60, 0.10, 0.20, 0.05, 0.70, 0.80],
    # q2: its only gallery item g6 is in its own camera             -> no valid match, skipped
    [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70],
    # q3 kept order: g0* g2 g4 g5* g6  (g1 same camera)            -> hits at ranks 1 and 4
    [0.20, 0.10, 0.30, 0.40, 0.50, 0.60, 0.70],
], dtype=np.float32)


def test_hand_computed_market1501_standard():
    res = evaluate_rank(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=5)
    assert res.num_valid_queries == 3 and res.num_queries == 4
    np.testing.assert_allclose(res.cmc, [1 / 3, 2 / 3, 2 / 3, 1, 1])
    ap = [(1 / 4 + 2 / 5) / 2, 1 / 2, (1 / 1 + 2 / 4) / 2]
    assert res.mAP == pytest.approx(np.mean(ap))  # 0.525
    assert res.mINP == pytest.approx(np.mean([2 / 5, 1 / 2, 2 / 4]))


def test_hand_computed_market1501_official_ap():
    res = evaluate_rank(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=5,
                        ap="official")
    # Mean over hits of (precision before the hit + precision at the hit) / 2; "before" is 1 at rank 1.
    q0 = ((0 / 3 + 1 / 4) / 2 + (1 / 4 + 2 / 5) / 2) / 2
    q1 = (0 / 1 + 1 / 2) / 2
    q3 = ((1 + 1) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    assert res.mAP == pytest.approx((q0 + q1 + q3) / 3)  # 0.39444...
    np.testing.assert_allclose(res.cmc, [1 / 3, 2 / 3, 2 / 3, 1, 1])


def test_ties_are_broken_by_gallery_index():
    g_pids, g_cams = np.array([5, 7, 7, 5]), np.array([1, 1, 1, 1])
    dist = np.array([[0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    res = evaluate_rank(dist, np.array([7]), g_pids, np.array([0]), g_cams, max_rank=4)
    # order g0 g1* g2* g3: hits at ranks 2 and 3
    np.testing.assert_allclose(res.cmc, [0, 1, 1, 1])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res.mINP == pytest.approx(2 / 3)


def test_infinite_distances_rank_last_and_removed_items_do_not_count():
    g_pids, g_cams = np.array([4, 4, 9, 4]), np.array([0, 1, 1, 2])
    dist = np.array([[np.inf, np.inf, 0.5, np.inf]])
    # g0 is removed (same camera); kept order g2 g1* g3*: hits at ranks 2 and 3
    res = evaluate_rank(dist, np.array([4]), g_pids, np.array([0]), g_cams, max_rank=3)
    assert res.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("ap", ["standard", "official"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("num_q, num_g, chunk_size", [(1, 5, None), (7, 40, 3), (23, 200, 5),
                                                      (40, 123, None)])
def test_matches_reference_on_random_problems(ap, ties, num_q, num_g, chunk_size):
    rng = np.random.default_rng(num_q * 1000 + num_g + ties)
    problem = random_problem(rng, num_q, num_g, ties=ties)
    dist, q_pids, g_pids, q_camids, g_camids = problem
    max_rank = min(10, num_g)
    res = evaluate_rank(*problem, max_rank=max_rank, ap=ap, chunk_size=chunk_size)
    cmc, m_ap, m_inp, num_valid = reference_market1501(*problem, max_rank=max_rank, ap=ap)
    assert res.num_valid_queries == num_valid
    np.testing.assert_allclose(res.cmc, cmc, rtol=0, atol=1e-12)
    assert res.mAP == pytest.approx(m_ap, abs=1e-12)
    assert res.mINP == pytest.approx(m_inp, abs=1e-12)


def test_chunking_float64_and_torch_inputs_give_identical_results():
    rng = np.random.default_rng(3)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 31, 90)
    base = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    for chunk in (1, 4, 31, 1000):
        other = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                              chunk_size=chunk)
        np.testing.assert_array_equal(other.cmc, base.cmc)
        assert other.mAP == pytest.approx(base.mAP, abs=1e-12)
    as_torch = evaluate_rank(torch.from_numpy(dist.astype(np.float64)), torch.from_numpy(q_pids),
                             torch.from_numpy(g_pids), torch.from_numpy(q_camids),
                             torch.from_numpy(g_camids), max_rank=20)
    np.testing.assert_array_equal(as_torch.cmc, base.cmc)
    assert as_torch.mAP == pytest.approx(base.mAP, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_cuhk03_matches_reference_sampling_and_is_seeded(ties):
    rng = np.random.default_rng(11)
    problem = random_problem(rng, 17, 60, num_ids=6, ties=ties)
    args = dict(max_rank=8, protocol="cuhk03", repeats=4)
    res = evaluate_rank(*problem, seed=5, chunk_size=3, **args)
    expected = reference_cuhk03_cmc(*problem, max_rank=8, repeats=4, seed=5)
    np.testing.assert_allclose(res.cmc, expected, atol=1e-12)
    again = evaluate_rank(*problem, seed=5, chunk_size=7, **args)
    np.testing.assert_array_equal(again.cmc, res.cmc)
    others = [evaluate_rank(*problem, seed=s, **args).cmc for s in range(1, 6)]
    assert any(not np.array_equal(c, res.cmc) for c in others)
    # mAP and mINP use the whole kept gallery, as under market1501.
    market = evaluate_rank(*problem, max_rank=8)
    assert res.mAP == pytest.approx(market.mAP) and res.mINP == pytest.approx(market.mINP)


def test_cuhk03_draws_one_item_per_identity():
    # Query pid 1 (camera 0). Gallery: its match at 0.5; identity 2 with three closer items;
    # identity 3 with one item at 0.4 and one at 0.6; its own camera-0 copy at 0.0 is removed.
    g_pids = np.array([1, 2, 2, 2, 3, 3, 1])
    g_cams = np.array([1, 1, 1, 1, 1, 1, 0])
    dist = np.array([[0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.0]])
    args = (dist, np.array([1]), g_pids, np.array([0]), g_cams)
    market = evaluate_rank(*args, max_rank=5)
    np.testing.assert_allclose(market.cmc, [0, 0, 0, 0, 1])
    cuhk = evaluate_rank(*args, max_rank=3, protocol="cuhk03", repeats=1000)
    # Identity 2 always beats the match; identity 3 does so in about half the draws.
    assert cuhk.cmc[0] == 0 and cuhk.cmc[2] == 1
    assert 0.45 < cuhk.cmc[1] < 0.55
    assert cuhk.mAP == pytest.approx(market.mAP)


def test_max_rank_larger_than_gallery_is_clipped_with_warning():
    with pytest.warns(UserWarning, match="larger than the gallery"):
        res = evaluate_rank(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS)
    assert len(res.cmc) == 7 and res.cmc[-1] == 1.0


def test_result_summary_and_dict():
    res = evaluate_rank(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=5)
    assert isinstance(res, RankResult)
    assert "mAP 52.50%" in res.summary() and "rank-1 33.33%" in res.summary()
    assert "rank-10" not in res.summary()
    d = res.as_dict()
    assert d["rank1"] == pytest.approx(1 / 3) and d["num_valid_queries"] == 3
    assert len(d["cmc"]) == 5


def test_input_errors_are_clear():
    args = (HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS)
    with pytest.raises(ValueError, match=r"len\(q_pids\) is 3 but distmat has 4 rows"):
        evaluate_rank(HAND_DIST, HAND_Q_PIDS[:3], *args[1:])
    with pytest.raises(ValueError, match=r"len\(g_camids\) is 6"):
        evaluate_rank(HAND_DIST, *args[:3], HAND_G_CAMS[:6])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(HAND_DIST[0], *args)
    with pytest.raises(TypeError, match="integer labels"):
        evaluate_rank(HAND_DIST, HAND_Q_PIDS.astype(float), *args[1:])
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_rank(HAND_DIST, *args, protocol="viper")
    with pytest.raises(ValueError, match="unknown ap"):
        evaluate_rank(HAND_DIST, *args, ap="interpolated")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(HAND_DIST, *args, max_rank=0)
    with pytest.raises(ValueError, match="no query has a correct match"):
        evaluate_rank(HAND_DIST, HAND_Q_PIDS + 100, *args[1:], max_rank=5)


def test_nan_only_matters_where_evaluated():
    dist = HAND_DIST.copy()
    dist[0, 3] = np.nan  # junk item: never looked at
    dist[0, 0] = np.nan  # same-camera item: removed
    ok = evaluate_rank(dist, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=5)
    assert ok.mAP == pytest.approx(0.525)
    dist[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(dist, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=5)
