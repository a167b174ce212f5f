"""Batch samplers for training: random, identity-balanced (P x K) and cross-camera pairs/triplets.

Every sampler here is a *batch* sampler (pass it as ``DataLoader(batch_sampler=...)``) and is
distributed-aware in the manner of :class:`torch.utils.data.DistributedSampler`: all ranks seed the
same generator with ``seed + epoch``, draw the same global epoch and keep their own share of each
global step, so the ranks' batches of one step are disjoint pieces of one global batch and every
rank runs the same number of steps. An epoch's batches are a pure function of
``(seed, epoch, rank, world_size)``. ``set_start(b)`` makes the next iteration begin at batch ``b``
of the current epoch, which is what an exact mid-epoch resume needs. Sizes given to the
constructors (``batch_size``, ``num_ids_per_batch``, ``triplets_per_batch``,
``pairs_per_batch``) are per rank; the global step is ``world_size`` times larger.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

T = TypeVar("T")
IndexTriple = tuple[int, int, int]  # (anchor, positive, negative) or (i, j, same)


def _resolve_dist(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Fill in rank / world size from torch.distributed when it is initialised, else 0 / 1."""
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return rank, world_size


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


class _EpochBatchSampler(Sampler[list[T]], ABC):
    """Shared epoch / rank / resume machinery; subclasses build one epoch's batches for a rank."""

    def __init__(self, *, rank: int | None, world_size: int | None, seed: int) -> None:
        self.rank, self.world_size = _resolve_dist(rank, world_size)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = seed
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (generator seed + epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        """Make the next iteration start at batch ``batch_index`` of the current epoch."""
        if not 0 <= batch_index <= len(self):
            raise ValueError(
                f"batch_index must be in [0, {len(self)}] (batches per epoch), got {batch_index}"
            )
        self._start = batch_index

    def __iter__(self) -> Iterator[list[T]]:
        start, self._start = self._start, 0
        rng = np.random.default_rng(self.seed + self.epoch)
        return iter(self._rank_batches(rng)[start:])

    @abstractmethod
    def __len__(self) -> int:
        """Batches per epoch on this rank (an iteration resumed by ``set_start`` yields fewer)."""

    @abstractmethod
    def _rank_batches(self, rng: np.random.Generator) -> list[list[T]]:
        """This rank's batches of the epoch whose generator is ``rng``."""


class RandomBatchSampler(_EpochBatchSampler[int]):
    """Shuffled batches of ``batch_size`` indices per rank.

    Global step ``s`` is the slice ``[s*G, (s+1)*G)`` of one permutation of ``range(num_samples)``
    (``G = batch_size * world_size``); rank ``r`` takes its ``r``-th block of ``batch_size``. With
    ``drop_last=False`` the last, incomplete global batch is split evenly over the ranks, padded
    from the start of the permutation when it does not divide (as DistributedSampler pads), so it
    may be smaller than ``batch_size``.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        drop_last: bool = True,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rank=rank, world_size=world_size, seed=seed)
        _check_positive(num_samples=num_samples, batch_size=batch_size)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.drop_last = drop_last
        if drop_last and num_samples < self._global_batch:
            raise ValueError(
                f"{num_samples} samples do not fill one batch of {batch_size} x world_size "
                f"{self.world_size}; lower batch_size or pass drop_last=False"
            )

    @property
    def _global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self._global_batch
        return math.ceil(self.num_samples / self._global_batch)

    def _rank_batches(self, rng: np.random.Generator) -> list[list[int]]:
        perm = rng.permutation(self.num_samples)
        full = self.num_samples // self._global_batch
        steps = perm[: full * self._global_batch].reshape(full, self.world_size, self.batch_size)
        batches = steps[:, self.rank].tolist()
        rest = self.num_samples - full * self._global_batch
        if rest and not self.drop_last:
            local = math.ceil(rest / self.world_size)
            tail = np.concatenate([perm[full * self._global_batch:],
                                   np.resize(perm, local * self.world_size - rest)])
            batches.append(tail.reshape(self.world_size, local)[self.rank].tolist())
        return batches


class BalancedIdentitySampler(_EpochBatchSampler[int]):
    """Batches of ``P`` identities x ``K`` images (``num_ids_per_batch`` x ``num_instances``).

    Every identity appears exactly once per epoch: identities are shuffled and taken ``P *
    world_size`` at a time, each rank getting ``P`` of them; the last incomplete group is dropped,
    so an epoch has ``num_ids // (P * world_size)`` batches. An identity's ``K`` images are drawn
    without replacement when it has at least ``K``, otherwise with replacement after using every
    image once. A batch lists the ``K`` indices of its first identity, then of the second, ...
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_ids_per_batch: int,
        num_instances: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rank=rank, world_size=world_size, seed=seed)
        _check_positive(num_ids_per_batch=num_ids_per_batch, num_instances=num_instances)
        pid_array = np.asarray(pids, dtype=np.int64)
        if pid_array.ndim != 1 or len(pid_array) == 0:
            raise ValueError("pids must be a non-empty 1-D sequence of identity labels")
        order = np.argsort(pid_array, kind="stable")
        _, starts = np.unique(pid_array[order], return_index=True)
        self._groups = np.split(order, starts[1:])
        self.num_ids_per_batch = num_ids_per_batch
        self.num_instances = num_instances
        if self.num_ids < num_ids_per_batch * self.world_size:
            raise ValueError(
                f"num_ids_per_batch {num_ids_per_batch} x world_size {self.world_size} exceeds the "
                f"{self.num_ids} identities; lower num_ids_per_batch"
            )

    @classmethod
    def from_batch_size(
        cls, pids: Sequence[int], batch_size: int, num_instances: int, **kwargs: int | None
    ) -> BalancedIdentitySampler:
        """Build from a per-rank batch size, ``P = batch_size // num_instances``."""
        _check_positive(batch_size=batch_size, num_instances=num_instances)
        if batch_size % num_instances:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of num_instances {num_instances}; "
                f"use e.g. {batch_size // num_instances * num_instances or num_instances}"
            )
        return cls(pids, batch_size // num_instances, num_instances, **kwargs)

    @property
    def num_ids(self) -> int:
        return len(self._groups)

    def __len__(self) -> int:
        return self.num_ids // (self.num_ids_per_batch * self.world_size)

    def _draw(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        k = self.num_instances
        if len(group) >= k:
            return rng.choice(group, k, replace=False)
        return np.concatenate([rng.permutation(group), rng.choice(group, k - len(group))])

    def _rank_batches(self, rng: np.random.Generator) -> list[list[int]]:
        per_step = self.num_ids_per_batch * self.world_size
        ids = rng.permutation(self.num_ids)[: len(self) * per_step]
        # Every rank draws the images of all the epoch's identities so the streams stay in step.
        picks = np.stack([self._draw(rng, self._groups[i]) for i in ids])
        steps = picks.reshape(-1, self.world_size, self.num_ids_per_batch * self.num_instances)
        return steps[:, self.rank].tolist()


def _draw_outside(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, cut_lo: np.ndarray,
                  cut_hi: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Uniform positions in ``[lo, hi)`` minus the sub-range ``[cut_lo, cut_hi)``, per row."""
    n = (hi - lo) - (cut_hi - cut_lo)
    pos = lo[:, None] + rng.integers(0, n[:, None], size=size)
    return np.where(pos >= cut_lo[:, None], pos + (cut_hi - cut_lo)[:, None], pos)


class _Pools:
    """For every image ``i``: the images sharing its ``major`` code but not its ``minor`` code.

    Candidates (optionally a ``subset`` of the images) are sorted by ``(major, minor)``, so each
    image's pool is one contiguous range minus one sub-range, found once here; drawing from the
    pools of many images at once is then a single vectorised step.
    """

    def __init__(self, major: np.ndarray, minor: np.ndarray, num_minor: int,
                 subset: np.ndarray | None = None) -> None:
        candidates = np.arange(len(major)) if subset is None else np.flatnonzero(subset)
        keys = major[candidates] * num_minor + minor[candidates]
        order = np.argsort(keys, kind="stable")
        self._index = candidates[order]
        keys = keys[order]
        own = major * num_minor + minor
        self._lo = np.searchsorted(keys, major * num_minor)
        self._hi = np.searchsorted(keys, (major + 1) * num_minor)
        self._cut_lo = np.searchsorted(keys, own)
        self._cut_hi = np.searchsorted(keys, own, side="right")
        self.sizes = (self._hi - self._lo) - (self._cut_hi - self._cut_lo)

    def draw(self, rng: np.random.Generator, images: np.ndarray, k: int) -> np.ndarray:
        """``k`` uniform draws (with replacement) from each image's pool: shape (len(images), k)."""
        pos = _draw_outside(rng, self._lo[images], self._hi[images], self._cut_lo[images],
                            self._cut_hi[images], (len(images), k))
        return self._index[pos]


class _CrossCameraSampler(_EpochBatchSampler[IndexTriple]):
    """Label coding and per-epoch anchor bookkeeping shared by the cross-camera samplers."""

    def __init__(self, pids: Sequence[int], camids: Sequence[int], *, rank: int | None,
                 world_size: int | None, seed: int) -> None:
        super().__init__(rank=rank, world_size=world_size, seed=seed)
        pid_array = np.asarray(pids, dtype=np.int64)
        cam_array = np.asarray(camids, dtype=np.int64)
        if pid_array.ndim != 1 or pid_array.shape != cam_array.shape or len(pid_array) == 0:
            raise ValueError("pids and camids must be non-empty 1-D sequences of equal length")
        _, self._pid = np.unique(pid_array, return_inverse=True)
        _, self._cam = np.unique(cam_array, return_inverse=True)
        self._num_pids = int(self._pid.max()) + 1
        self._num_cams = int(self._cam.max()) + 1
        # Pool of image i: the images of its camera that show another identity.
        self._same_camera = _Pools(self._cam, self._pid, self._num_pids)

    def _set_anchors(self, eligible: np.ndarray, anchors_per_batch: int, what: str) -> None:
        self._anchors = np.flatnonzero(eligible)
        self.num_anchors = len(self._anchors)
        self.num_skipped_ids = self._num_pids - len(np.unique(self._pid[self._anchors]))
        self._anchors_per_batch = anchors_per_batch
        if self.num_anchors == 0:
            raise ValueError(
                f"no identity has images in two cameras usable for {what}; cross-camera "
                "sampling needs camera ids (check the data set's camids)"
            )
        if self.num_anchors < anchors_per_batch * self.world_size:
            raise ValueError(
                f"only {self.num_anchors} anchor images for {anchors_per_batch} anchors per batch "
                f"x world_size {self.world_size}; lower the batch size"
            )

    def __len__(self) -> int:
        return self.num_anchors // (self._anchors_per_batch * self.world_size)

    def _epoch_anchors(self, rng: np.random.Generator) -> np.ndarray:
        """This epoch's anchors, shaped (steps, world_size, anchors_per_batch)."""
        count = len(self) * self._anchors_per_batch * self.world_size
        return rng.permutation(self._anchors)[:count].reshape(
            -1, self.world_size, self._anchors_per_batch)


class CrossCameraTripletSampler(_CrossCameraSampler):
    """Batches of ``(anchor, positive, negative)`` index triplets across cameras (MTDnet).

    The anchor is in camera A; the positive (same identity) and the negative (another identity) are
    both in camera B != A. For every anchor/positive pair the batch also holds the mirror: the
    positive as anchor, the anchor as positive, negatives from camera A. Each pair brings
    ``negatives_per_positive`` negatives per direction, so ``triplets_per_batch`` must be a multiple
    of ``2 * negatives_per_positive``; in a batch each anchor's forward triplets are followed by
    their mirrors. An epoch is one pass over the anchor images, i.e. every image of an identity
    seen by two cameras (cameras holding a single identity cannot supply negatives and are left
    out), leftovers that do not fill a global step dropped; identities with no such image are
    skipped and counted in ``num_skipped_ids``. With 128 triplets and one negative, a batch holds
    64 anchors, i.e. 128 positive and 128 negative pairs for the verification task.
    """

    def __init__(
        self,
        pids: Sequence[int],
        camids: Sequence[int],
        triplets_per_batch: int = 128,
        negatives_per_positive: int = 1,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(pids, camids, rank=rank, world_size=world_size, seed=seed)
        _check_positive(triplets_per_batch=triplets_per_batch,
                        negatives_per_positive=negatives_per_positive)
        per_anchor = 2 * negatives_per_positive
        if triplets_per_batch % per_anchor:
            raise ValueError(
                f"triplets_per_batch {triplets_per_batch} is not a multiple of 2 x "
                f"negatives_per_positive = {per_anchor} (each pair comes with its mirror)"
            )
        self.triplets_per_batch = triplets_per_batch
        self.negatives_per_positive = negatives_per_positive
        has_negative = self._same_camera.sizes > 0
        # Positives of image i: its identity in other cameras that can also supply a negative.
        self._positives = _Pools(self._pid, self._cam, self._num_cams, subset=has_negative)
        self._set_anchors(has_negative & (self._positives.sizes > 0),
                          triplets_per_batch // per_anchor, "triplets")

    def _rank_batches(self, rng: np.random.Generator) -> list[list[IndexTriple]]:
        steps = self._epoch_anchors(rng)
        anchor = steps.reshape(-1)
        positive = self._positives.draw(rng, anchor, 1)[:, 0]
        k = self.negatives_per_positive
        # The positive shares the anchor's identity, so its own pool holds the forward negatives.
        forward_neg = self._same_camera.draw(rng, positive, k)
        mirror_neg = self._same_camera.draw(rng, anchor, k)
        forward = np.stack([np.repeat(anchor, k), np.repeat(positive, k), forward_neg.ravel()], 1)
        mirror = np.stack([np.repeat(positive, k), np.repeat(anchor, k), mirror_neg.ravel()], 1)
        # (anchor, direction, negative, 3): an anchor's forward triplets, then its mirrors.
        triplets = np.stack([forward.reshape(-1, k, 3), mirror.reshape(-1, k, 3)], 1)
        triplets = triplets.reshape(*steps.shape, 2 * k, 3)[:, self.rank]
        return [[tuple(t) for t in batch.reshape(-1, 3).tolist()] for batch in triplets]


class AllPairsTripletSampler(_CrossCameraSampler):
    """Every cross-camera positive pair, both ways, with ``negatives_per_positive`` negatives each.

    The triplet list of the authors' ``BuildData/BuildData_cuhk03.py`` (cwhgn/MTDnet): for each
    ordered pair ``(anchor, positive)`` of one identity in two different cameras, ``k`` triplets
    whose negative identity is drawn uniformly from the other identities seen by the positive's
    camera and whose negative image is uniform among that identity's images there (the authors'
    "AAB" and "BBA" lists for CUHK03's two views); the list is shuffled. Like the authors' LMDB,
    the list is drawn once (from ``seed``) and read in the same order every epoch; an epoch is one
    pass, leftovers that do not fill a global step dropped. Consecutive steps take consecutive
    slices, and the ranks split each global step.
    """

    def __init__(
        self,
        pids: Sequence[int],
        camids: Sequence[int],
        triplets_per_batch: int = 128,
        negatives_per_positive: int = 10,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(pids, camids, rank=rank, world_size=world_size, seed=seed)
        _check_positive(triplets_per_batch=triplets_per_batch,
                        negatives_per_positive=negatives_per_positive)
        self.triplets_per_batch = triplets_per_batch
        self.negatives_per_positive = negatives_per_positive
        self._triplets = self._build(np.random.default_rng(seed))
        self.num_triplets = len(self._triplets)
        self.num_skipped_ids = self._num_pids - len(np.unique(self._pid[self._triplets[:, 0]]))
        if len(self) == 0:
            raise ValueError(f"only {self.num_triplets} triplets for {triplets_per_batch} per batch "
                             f"x world_size {self.world_size}; lower the batch size")

    def _build(self, rng: np.random.Generator) -> np.ndarray:
        pid, cam, num_cams = self._pid, self._cam, self._num_cams
        # images grouped by (identity, camera): group g holds index[start[g]:start[g] + size[g]]
        group = pid * num_cams + cam
        index = np.argsort(group, kind="stable")
        keys, start, size = np.unique(group[index], return_index=True, return_counts=True)
        by_pid = np.argsort(pid, kind="stable")
        pairs = []
        for images in np.split(by_pid, np.flatnonzero(np.diff(pid[by_pid])) + 1):
            a, b = np.nonzero(cam[images][:, None] != cam[images][None, :])
            pairs.append(np.stack([images[a], images[b]], 1))
        anchor, positive = np.concatenate(pairs).T
        if len(anchor) == 0:
            raise ValueError("no identity has images in two cameras; cross-camera triplets need "
                             "camera ids (check the data set's camids)")
        k = self.negatives_per_positive
        anchor, positive = np.repeat(anchor, k), np.repeat(positive, k)
        # negative identity: uniform over the identities seen by the positive's camera, except
        # the anchor's (rank r among them, skipping the anchor's own position)
        cam_groups = [np.flatnonzero(keys % num_cams == c) for c in range(num_cams)]
        target_cam = cam[positive]
        negative = np.empty_like(anchor)
        keep = np.ones(len(anchor), dtype=bool)
        for c, groups in enumerate(cam_groups):
            rows = np.flatnonzero(target_cam == c)
            if len(rows) == 0:
                continue
            if len(groups) < 2:  # no other identity in this camera: no negative
                keep[rows] = False
                continue
            own = np.searchsorted(keys[groups], pid[anchor[rows]] * num_cams + c)
            pick = rng.integers(0, len(groups) - 1, size=len(rows))
            pick += pick >= own
            g = groups[pick]
            negative[rows] = index[start[g] + rng.integers(0, size[g])]
        triplets = np.stack([anchor, positive, negative], 1)[keep]
        return triplets[rng.permutation(len(triplets))]

    def __len__(self) -> int:
        return self.num_triplets // (self.triplets_per_batch * self.world_size)

    def _rank_batches(self, rng: np.random.Generator) -> list[list[IndexTriple]]:
        steps = self._triplets[: len(self) * self.triplets_per_batch * self.world_size]
        steps = steps.reshape(len(self), self.world_size, self.triplets_per_batch, 3)[:, self.rank]
        return [[tuple(t) for t in batch.tolist()] for batch in steps]


class CrossCameraPairSampler(_CrossCameraSampler):
    """Batches of ``(i, j, same)`` index pairs with ``i`` and ``j`` in different cameras.

    For verification-only training: ``round(pairs_per_batch * positive_fraction)`` pairs per batch
    are positive (``same == 1``, one identity), the rest negative (``same == 0``, two identities),
    positives first. The first element of each pair is an anchor image of an identity seen by two
    cameras; an epoch is one pass over those anchors (leftovers that do not fill a global step
    dropped), with each anchor's partner drawn at random from the other cameras. Identities with
    no anchor image are counted in ``num_skipped_ids``.
    """

    def __init__(
        self,
        pids: Sequence[int],
        camids: Sequence[int],
        pairs_per_batch: int,
        positive_fraction: float = 0.5,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(pids, camids, rank=rank, world_size=world_size, seed=seed)
        _check_positive(pairs_per_batch=pairs_per_batch)
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.pairs_per_batch = pairs_per_batch
        self.positive_fraction = positive_fraction
        self.num_positives = round(pairs_per_batch * positive_fraction)
        self._positives = _Pools(self._pid, self._cam, self._num_cams)
        self._other_cameras = _Pools(np.zeros_like(self._cam), self._cam, self._num_cams)
        has_negative = self._other_cameras.sizes > self._positives.sizes
        self._set_anchors((self._positives.sizes > 0) & has_negative, pairs_per_batch, "pairs")

    def _negative_partners(self, rng: np.random.Generator, anchor: np.ndarray) -> np.ndarray:
        """Uniform images of another camera and identity, by rejecting same-identity draws."""
        partner = np.empty_like(anchor)
        todo = np.arange(len(anchor))
        while len(todo):
            partner[todo] = self._other_cameras.draw(rng, anchor[todo], 1)[:, 0]
            todo = todo[self._pid[partner[todo]] == self._pid[anchor[todo]]]
        return partner

    def _rank_batches(self, rng: np.random.Generator) -> list[list[IndexTriple]]:
        steps = self._epoch_anchors(rng)
        is_positive = np.arange(self.pairs_per_batch) < self.num_positives
        partner = np.empty_like(steps)
        partner[..., is_positive] = self._positives.draw(
            rng, steps[..., is_positive].reshape(-1), 1
        ).reshape(*steps.shape[:2], self.num_positives)
        partner[..., ~is_positive] = self._negative_partners(
            rng, steps[..., ~is_positive].reshape(-1)
        ).reshape(*steps.shape[:2], self.pairs_per_batch - self.num_positives)
        same = np.broadcast_to(is_positive.astype(np.int64), steps.shape)
        pairs = np.stack([steps, partner, same], -1)[:, self.rank]
        return [[tuple(p) for p in batch.tolist()] for batch in pairs]


class FlattenedBatchSampler(Sampler[list[int]]):
    """Flatten a pair/triplet batch sampler into plain index lists for ``DataLoader``.

    ``DataLoader(dataset, batch_sampler=FlattenedBatchSampler(triplets, fields=3))`` loads a batch
    of ``B`` triplets as ``3 * B`` images in the order ``a0, p0, n0, a1, ...``; reshape the loaded
    tensor to ``(B, 3, ...)``. ``fields`` is how many leading entries of each tuple are indices (2
    for ``CrossCameraPairSampler``, whose ``same`` label can be recomputed from the loaded pids).
    ``set_epoch``, ``set_start`` and ``len`` are forwarded to the wrapped sampler.
    """

    def __init__(self, sampler: _EpochBatchSampler[IndexTriple], fields: int) -> None:
        _check_positive(fields=fields)
        self.sampler = sampler
        self.fields = fields

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def set_start(self, batch_index: int) -> None:
        self.sampler.set_start(batch_index)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            yield [index for item in batch for index in item[: self.fields]]
