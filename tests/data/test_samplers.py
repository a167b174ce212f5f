"""Batch samplers: counts, coverage, reproducibility, rank sharding, resume, cross-camera rules."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from reidkit.data import samplers
from reidkit.data.samplers import (
    BalancedIdentitySampler,
    CrossCameraPairSampler,
    CrossCameraTripletSampler,
    FlattenedBatchSampler,
    RandomBatchSampler,
)


def epoch(sampler, e=0):
    sampler.set_epoch(e)
    return list(sampler)


def labelled_set(seed=0, num_pids=12, num_cams=3, num_images=90):
    """Random (pids, camids) plus one identity seen by a single camera only."""
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, num_pids, num_images)
    cams = rng.integers(0, num_cams, num_images)
    pids = np.concatenate([pids, [num_pids] * 3])
    cams = np.concatenate([cams, [0] * 3])
    return pids.tolist(), cams.tolist()


# ---------------------------------------------------------------- RandomBatchSampler


def test_random_counts_and_coverage():
    s = RandomBatchSampler(23, 4)
    batches = epoch(s)
    assert len(s) == len(batches) == 5
    assert all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20 and set(flat) <= set(range(23))

    keep = RandomBatchSampler(23, 4, drop_last=False)
    batches = epoch(keep)
    assert len(keep) == len(batches) == 6
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert sorted(i for b in batches for i in b) == list(range(23))


def test_random_reproducible_per_epoch_and_seed():
    a, b = RandomBatchSampler(50, 5, seed=7), RandomBatchSampler(50, 5, seed=7)
    assert epoch(a, 3) == epoch(b, 3) == epoch(a, 3)
    assert epoch(a, 3) != epoch(a, 4)
    assert epoch(a, 3) != epoch(RandomBatchSampler(50, 5, seed=8), 3)


@pytest.mark.parametrize("world_size", [2, 3])
def test_random_ranks_split_the_global_batch(world_size):
    ranks = [RandomBatchSampler(61, 4, rank=r, world_size=world_size, seed=1)
             for r in range(world_size)]
    single = RandomBatchSampler(61, 4 * world_size, seed=1)
    per_rank = [epoch(s, 2) for s in ranks]
    assert all(len(b) == len(single) == 61 // (4 * world_size) for b in per_rank)
    for step, global_batch in enumerate(epoch(single, 2)):
        parts = [batches[step] for batches in per_rank]
        assert sum(parts, []) == global_batch
        assert len(set(sum(parts, []))) == 4 * world_size


def test_random_keep_last_pads_evenly_across_ranks():
    # 10 samples, 3 ranks x 2: one full step of 6, then 4 left -> 2 per rank after padding 2.
    per_rank = [epoch(RandomBatchSampler(10, 2, drop_last=False, rank=r, world_size=3))
                for r in range(3)]
    assert [[len(b) for b in batches] for batches in per_rank] == [[2, 2]] * 3
    assert {i for batches in per_rank for b in batches for i in b} == set(range(10))


def test_random_set_start_resumes_like_skipping():
    s = RandomBatchSampler(40, 4, seed=3)
    full = epoch(s, 5)
    s.set_start(3)
    assert list(s) == full[3:]
    assert list(s) == full  # set_start applies to one iteration only
    s.set_start(len(s))
    assert list(s) == []


def test_random_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        RandomBatchSampler(10, 0)
    with pytest.raises(ValueError, match="drop_last=False"):
        RandomBatchSampler(5, 3, world_size=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        RandomBatchSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="epoch"):
        RandomBatchSampler(10, 2).set_epoch(-1)
    with pytest.raises(ValueError, match="batch_index"):
        RandomBatchSampler(10, 2).set_start(6)


def test_rank_and_world_size_default_to_torch_distributed(monkeypatch):
    monkeypatch.setattr(samplers.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(samplers.dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(samplers.dist, "get_rank", lambda: 2)
    s = RandomBatchSampler(30, 2)
    assert (s.rank, s.world_size) == (2, 3)
    assert epoch(s) == epoch(RandomBatchSampler(30, 2, rank=2, world_size=3))


def test_rank_and_world_size_default_without_distributed():
    s = RandomBatchSampler(30, 2)
    assert (s.rank, s.world_size) == (0, 1)


# ---------------------------------------------------------------- BalancedIdentitySampler

# Identity i has i + 1 images: ids 0..2 have fewer than K = 4.
PIDS = [pid for pid in range(12) for _ in range(pid + 1)]


def pid_of(indices):
    return [PIDS[i] for i in indices]


def test_balanced_batches_are_p_ids_by_k_images():
    s = BalancedIdentitySampler(PIDS, 3, 4, seed=0)
    batches = epoch(s)
    assert len(s) == len(batches) == 4
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(pid_of(batch))
        assert len(counts) == 3 and set(counts.values()) == {4}
        # K consecutive entries per identity
        assert all(len(set(pid_of(batch[i:i + 4]))) == 1 for i in range(0, 12, 4))


def test_balanced_every_identity_once_per_epoch():
    s = BalancedIdentitySampler(PIDS, 3, 4)
    for e in range(3):
        seen = [PIDS[b[i]] for b in epoch(s, e) for i in range(0, len(b), 4)]
        assert sorted(seen) == list(range(12))

    # 12 ids, P = 5: two batches, the last incomplete group of 2 dropped.
    s = BalancedIdentitySampler(PIDS, 5, 2)
    seen = [PIDS[b[i]] for b in epoch(s) for i in range(0, 10, 2)]
    assert len(s) == 2 and len(seen) == len(set(seen)) == 10


def test_balanced_small_ids_with_replacement_large_without():
    s = BalancedIdentitySampler(PIDS, 3, 4, seed=5)
    images_of = {pid: [i for i, p in enumerate(PIDS) if p == pid] for pid in range(12)}
    chosen: dict[int, set[int]] = {pid: set() for pid in range(12)}
    for e in range(30):
        for batch in epoch(s, e):
            for i in range(0, 12, 4):
                group = batch[i:i + 4]
                pid = PIDS[group[0]]
                if pid + 1 < 4:  # fewer images than K: all used, the rest repeated
                    assert set(group) == set(images_of[pid])
                else:
                    assert len(set(group)) == 4
                chosen[pid] |= set(group)
    # Over epochs the large identities contribute all their images, not a fixed K.
    assert all(chosen[pid] == set(images_of[pid]) for pid in range(12))


def test_balanced_reproducible_and_epochs_differ():
    a, b = BalancedIdentitySampler(PIDS, 2, 3, seed=4), BalancedIdentitySampler(PIDS, 2, 3, seed=4)
    assert epoch(a, 1) == epoch(b, 1) == epoch(a, 1)
    assert epoch(a, 1) != epoch(a, 2)


@pytest.mark.parametrize("world_size", [2, 3])
def test_balanced_ranks_split_the_global_ids(world_size):
    ranks = [BalancedIdentitySampler(PIDS, 2, 3, rank=r, world_size=world_size, seed=9)
             for r in range(world_size)]
    single = BalancedIdentitySampler(PIDS, 2 * world_size, 3, seed=9)
    per_rank = [epoch(s, 1) for s in ranks]
    assert all(len(b) == len(single) == 12 // (2 * world_size) for b in per_rank)
    for step, global_batch in enumerate(epoch(single, 1)):
        parts = [batches[step] for batches in per_rank]
        assert sum(parts, []) == global_batch
        id_sets = [set(pid_of(p)) for p in parts]
        assert all(len(ids) == 2 for ids in id_sets)
        assert len(set().union(*id_sets)) == 2 * world_size


def test_balanced_set_start_resumes_like_skipping():
    s = BalancedIdentitySampler(PIDS, 2, 2, seed=1)
    full = epoch(s, 4)
    s.set_start(4)
    assert list(s) == full[4:]


def test_balanced_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_instances"):
        BalancedIdentitySampler(PIDS, 2, 0)
    with pytest.raises(ValueError, match="num_ids_per_batch"):
        BalancedIdentitySampler(PIDS, 13, 2)
    with pytest.raises(ValueError, match="num_ids_per_batch 7 x world_size 2"):
        BalancedIdentitySampler(PIDS, 7, 2, rank=0, world_size=2)
    with pytest.raises(ValueError, match="non-empty"):
        BalancedIdentitySampler([], 1, 1)
    with pytest.raises(ValueError, match="not a multiple of num_instances 6"):
        BalancedIdentitySampler.from_batch_size(PIDS, 64, 6)


def test_balanced_from_batch_size():
    s = BalancedIdentitySampler.from_batch_size(PIDS, 8, 4, seed=2)
    assert (s.num_ids_per_batch, s.num_instances) == (2, 4)
    assert epoch(s) == epoch(BalancedIdentitySampler(PIDS, 2, 4, seed=2))


# ---------------------------------------------------------------- cross-camera samplers


def brute_force_triplet_anchors(pids, cams):
    """Images with a same-id image in another camera that holds another id, and whose own
    camera holds another id (so that both directions have a negative)."""
    n = len(pids)
    has_other = [any(cams[j] == cams[i] and pids[j] != pids[i] for j in range(n)) for i in range(n)]
    return [i for i in range(n) if has_other[i] and any(
        pids[j] == pids[i] and cams[j] != cams[i] and has_other[j] for j in range(n))]


def check_triplet(t, pids, cams):
    a, p, n = t
    assert cams[a] != cams[p] and cams[p] == cams[n]
    assert pids[a] == pids[p] and pids[n] != pids[a]


def test_triplets_obey_the_cross_camera_rules_and_mirror():
    pids, cams = labelled_set()
    s = CrossCameraTripletSampler(pids, cams, triplets_per_batch=12, negatives_per_positive=2)
    anchors = brute_force_triplet_anchors(pids, cams)
    assert s.num_anchors == len(anchors)
    # Identity 12 is seen by one camera only (so is identity 2, by chance of the draw).
    assert s.num_skipped_ids == len(set(pids) - {pids[a] for a in anchors}) == 2
    batches = epoch(s)
    assert len(s) == len(batches) == len(anchors) // 3
    forward_anchors = []
    for batch in batches:
        assert len(batch) == 12 and all(isinstance(i, int) for t in batch for i in t)
        for group in range(0, 12, 4):
            (a, p, n1), (a2, p2, n2), (m1p, m1a, m1), (m2p, m2a, m2) = batch[group:group + 4]
            assert (a, p) == (a2, p2) and (m1p, m1a) == (m2p, m2a) == (p, a)
            for t in batch[group:group + 4]:
                check_triplet(t, pids, cams)
            assert cams[m1] == cams[m2] == cams[a]
            forward_anchors.append(a)
    assert len(set(forward_anchors)) == len(forward_anchors) == len(batches) * 3
    assert set(forward_anchors) <= set(anchors)


def test_triplets_skip_cameras_with_a_single_identity():
    # Camera 2 only ever sees identity 0: it can supply no negative for identity 0.
    pids = [0, 0, 0, 1, 1, 2, 2, 0, 0]
    cams = [0, 1, 0, 1, 0, 1, 0, 2, 2]
    s = CrossCameraTripletSampler(pids, cams, triplets_per_batch=2, negatives_per_positive=1)
    assert s.num_anchors == len(brute_force_triplet_anchors(pids, cams)) == 7
    for e in range(20):
        for batch in epoch(s, e):
            for t in batch:
                check_triplet(t, pids, cams)
                assert cams[t[0]] != 2 and cams[t[1]] != 2


def test_triplet_negatives_cover_every_candidate():
    pids, cams = labelled_set(seed=1, num_pids=5, num_cams=2, num_images=30)
    s = CrossCameraTripletSampler(pids, cams, triplets_per_batch=2)
    used: dict[tuple[int, int], set[int]] = {}
    for e in range(30):
        for batch in epoch(s, e):
            for a, _, n in batch:
                used.setdefault((pids[a], cams[n]), set()).add(n)
    assert len(used) == 10
    for (pid, cam), negatives in used.items():
        assert negatives == {j for j in range(len(pids)) if cams[j] == cam and pids[j] != pid}


def test_draw_outside_is_uniform_over_the_allowed_positions():
    rng = np.random.default_rng(0)
    lo, hi, cut_lo, cut_hi = (np.array([v]) for v in (3, 9, 5, 7))
    draws = samplers._draw_outside(rng, lo, hi, cut_lo, cut_hi, (1, 40000)).ravel()
    freq = Counter(draws.tolist())
    assert set(freq) == {3, 4, 7, 8}
    assert all(abs(c / 40000 - 0.25) < 0.01 for c in freq.values())


@pytest.mark.parametrize("world_size", [2, 3])
def test_triplet_ranks_split_the_global_batch(world_size):
    pids, cams = labelled_set(num_images=200)
    ranks = [CrossCameraTripletSampler(pids, cams, 8, 2, rank=r, world_size=world_size, seed=3)
             for r in range(world_size)]
    single = CrossCameraTripletSampler(pids, cams, 8 * world_size, 2, seed=3)
    per_rank = [epoch(s, 2) for s in ranks]
    assert all(len(b) == len(single) for b in per_rank)
    for step, global_batch in enumerate(epoch(single, 2)):
        parts = [batches[step] for batches in per_rank]
        assert sum(parts, []) == global_batch
        anchors = [{t[0] for t in part[::4]} for part in parts]
        assert len(set().union(*anchors)) == 2 * world_size


def test_triplets_reproducible_resumable_and_epochs_differ():
    pids, cams = labelled_set()
    s = CrossCameraTripletSampler(pids, cams, 4, 1, seed=11)
    full = epoch(s, 3)
    assert full == epoch(CrossCameraTripletSampler(pids, cams, 4, 1, seed=11), 3)
    assert full != epoch(s, 4)
    s.set_epoch(3)
    s.set_start(5)
    assert list(s) == full[5:]


def test_triplets_reject_bad_arguments():
    pids, cams = labelled_set()
    with pytest.raises(ValueError, match="multiple of 2 x negatives_per_positive = 4"):
        CrossCameraTripletSampler(pids, cams, triplets_per_batch=10, negatives_per_positive=2)
    with pytest.raises(ValueError, match="camera"):
        CrossCameraTripletSampler([0, 0, 1, 1], [0, 0, 0, 0], 2)
    with pytest.raises(ValueError, match="lower the batch size"):
        CrossCameraTripletSampler(pids, cams, triplets_per_batch=1000)
    with pytest.raises(ValueError, match="equal length"):
        CrossCameraTripletSampler([0, 1], [0], 2)


def test_pairs_obey_the_cross_camera_rules():
    pids, cams = labelled_set()
    s = CrossCameraPairSampler(pids, cams, pairs_per_batch=10, positive_fraction=0.3)
    assert s.num_skipped_ids == 2 and s.num_positives == 3  # identities 2 and 12
    assert s.num_anchors == sum(pid not in (2, 12) for pid in pids)
    batches = epoch(s)
    assert len(batches) == len(s) == s.num_anchors // 10
    firsts = [i for batch in batches for i, _, _ in batch]
    assert len(set(firsts)) == len(firsts)
    for batch in batches:
        assert [same for _, _, same in batch] == [1] * 3 + [0] * 7
        for i, j, same in batch:
            assert cams[i] != cams[j]
            assert (pids[i] == pids[j]) == bool(same)


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (1.0, 6), (0.5, 3)])
def test_pairs_positive_fraction(fraction, expected):
    pids, cams = labelled_set()
    s = CrossCameraPairSampler(pids, cams, 6, fraction)
    for batch in epoch(s):
        assert sum(same for _, _, same in batch) == expected
        assert all((pids[i] == pids[j]) == bool(same) for i, j, same in batch)


def test_pairs_ranks_split_and_reproducible():
    pids, cams = labelled_set(num_images=200)
    ranks = [CrossCameraPairSampler(pids, cams, 4, rank=r, world_size=2, seed=6) for r in range(2)]
    single = CrossCameraPairSampler(pids, cams, 8, seed=6)
    per_rank = [epoch(s, 1) for s in ranks]
    for step, global_batch in enumerate(epoch(single, 1)):
        # Same anchors as the global batch; positives are assigned within each rank's batch.
        parts = [batches[step] for batches in per_rank]
        assert [p[0] for part in parts for p in part] == [p[0] for p in global_batch]
        assert all([same for _, _, same in part] == [1, 1, 0, 0] for part in parts)
    assert per_rank[0] == epoch(CrossCameraPairSampler(pids, cams, 4, rank=0, world_size=2,
                                                       seed=6), 1)
    assert per_rank[0] != epoch(ranks[0], 2)


def test_pairs_reject_bad_arguments():
    pids, cams = labelled_set()
    with pytest.raises(ValueError, match="positive_fraction"):
        CrossCameraPairSampler(pids, cams, 4, 1.5)
    with pytest.raises(ValueError, match="pairs_per_batch"):
        CrossCameraPairSampler(pids, cams, 0)


def test_flattened_sampler_feeds_a_dataloader():
    pids, cams = labelled_set()
    triplets = CrossCameraTripletSampler(pids, cams, 4, 1, seed=2)
    flat = FlattenedBatchSampler(triplets, fields=3)
    data = TensorDataset(torch.arange(len(pids)))
    flat.set_epoch(1)
    loaded = [batch[0].view(-1, 3).tolist() for batch in DataLoader(data, batch_sampler=flat)]
    assert len(flat) == len(triplets) == len(loaded)
    assert loaded == [[list(t) for t in b] for b in epoch(triplets, 1)]
    flat.set_start(2)
    assert len(list(flat)) == len(triplets) - 2

    pairs = FlattenedBatchSampler(CrossCameraPairSampler(pids, cams, 4), fields=2)
    assert all(len(b) == 8 for b in pairs)


# ----------------------------------------------------------------------------- all-pairs triplets
def _two_view_set():
    # pid 0: 1 image in cam 0, 2 in cam 1; pid 1: 1 + 1; pid 2: 2 + 1 -> 10 ordered positive pairs
    pids = [0, 0, 0, 1, 1, 2, 2, 2]
    cams = [0, 1, 1, 0, 1, 0, 0, 1]
    return pids, cams


def test_all_pairs_lists_every_positive_pair_both_ways_times_k():
    from reidkit.data.samplers import AllPairsTripletSampler

    pids, cams = _two_view_set()
    sampler = AllPairsTripletSampler(pids, cams, triplets_per_batch=4, negatives_per_positive=3,
                                     rank=0, world_size=1, seed=0)
    assert sampler.num_triplets == 10 * 3 and len(sampler) == 7
    triplets = [t for batch in sampler for t in batch]
    assert len(triplets) == 28  # 30 listed, the last 2 do not fill a batch
    full = {tuple(t) for t in sampler._triplets.tolist()}
    pairs = {(a, p) for a, p, _ in full}
    expected = {(a, p) for a in range(8) for p in range(8)
                if pids[a] == pids[p] and cams[a] != cams[p]}
    assert pairs == expected  # every ordered pair, i.e. both directions
    for a, p, n in sampler._triplets.tolist():
        assert pids[n] != pids[a] and cams[n] == cams[p]  # negative from the positive's camera


def test_all_pairs_list_is_fixed_across_epochs_like_the_authors_lmdb():
    from reidkit.data.samplers import AllPairsTripletSampler

    pids, cams = _two_view_set()
    sampler = AllPairsTripletSampler(pids, cams, 4, 3, rank=0, world_size=1, seed=5)
    first = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first
    sampler.set_start(2)
    assert list(sampler) == first[2:]
    other = AllPairsTripletSampler(pids, cams, 4, 3, rank=0, world_size=1, seed=6)
    assert list(other) != first


def test_all_pairs_negative_identity_is_uniform_not_image_weighted():
    from reidkit.data.samplers import AllPairsTripletSampler

    # anchor identity 0; in camera 1 identity 1 has 1 image and identity 2 has 9
    pids = [0, 0] + [1] + [2] * 9
    cams = [0, 1] + [1] + [1] * 9
    sampler = AllPairsTripletSampler(pids, cams, 2, 2000, rank=0, world_size=1, seed=0)
    negatives = np.array([n for a, p, n in sampler._triplets.tolist() if a == 0])
    share_of_1 = float(np.mean(np.array(pids)[negatives] == 1))
    assert abs(share_of_1 - 0.5) < 0.04  # by images it would be 0.1


def test_all_pairs_ranks_split_each_global_step():
    from reidkit.data.samplers import AllPairsTripletSampler

    pids, cams = _two_view_set()
    ranks = [AllPairsTripletSampler(pids, cams, 2, 3, rank=r, world_size=2, seed=1) for r in (0, 1)]
    whole = AllPairsTripletSampler(pids, cams, 4, 3, rank=0, world_size=1, seed=1)
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for step, (b0, b1) in enumerate(zip(*ranks, strict=True)):
        assert b0 + b1 == list(whole)[step]
