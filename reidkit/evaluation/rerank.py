"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with bounded memory.

The result equals the widely used reference ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2,
lambda_value)`` of the authors' ``person-re-ranking`` repository (the same function is copied in
torchreid ``torchreid/utils/rerank.py``) to float32 rounding, for distances without ties. That
version *squares* the distances it is given and divides row ``i`` of the (Q+G) x (Q+G) matrix by
its maximum (``np.max(axis=0)`` followed by a transpose). Note that torchreid hands it squared
Euclidean distances, so there the ranking works on the fourth power of the Euclidean distance;
pass plain (not squared) Euclidean distances to get the original paper's squared distances.

The reference holds several dense (Q+G)^2 arrays (8.6 GB for Market-1501). Here only the
k nearest neighbours per item are kept (found chunk by chunk), the k-reciprocal encodings V are
sparse matrices, and the Jaccard distance is accumulated from the sparse columns of V for a few
queries at a time, so working memory stays under ``max_memory_gb`` besides the inputs and the
Q x G result. ``re_rank_features`` starts from features and never holds an N x N matrix at all.

Both take a ``device``: the distance rows, their normalisation and the nearest-neighbour search
(the dense, costly part) run there in torch, on the CPU by default or on a CUDA device; the sparse
encodings stay on the CPU. The CPU is the same torch code path, so a CUDA result equals it to
float32 rounding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from reidkit.evaluation.distance import FEATURE_METRICS, check_metric

__all__ = ["re_rank", "re_rank_features"]

_BYTES_PER_GB = 1 << 30
# Dimensions of the projection used to shortlist neighbour candidates when approximate=True, and
# how many candidates per needed neighbour are re-scored exactly.
_APPROX_DIM = 64
_APPROX_CANDIDATES_PER_NEIGHBOUR = 4
_PAIR_BUFFER_BYTES = 8 << 20


def re_rank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    max_memory_gb: float = 1.0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Re-rank a query x gallery distance matrix with k-reciprocal encoding.

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhood (the paper uses 20).
        k2: size of the local query expansion (6); 1 turns expansion off.
        lambda_value: weight of the original distance in the result (0.3).
        max_memory_gb: bound on the working memory, inputs and result not counted (on the
            device, a chunk of distance rows at a time).
        device: where the distance rows are normalised and searched (``"cuda"``; default CPU).

    Returns:
        (Q, G) float32 re-ranked distances, equal to the reference implementation.
    """
    q_g = _as_2d("q_g_dist", q_g_dist)
    q_q = _as_2d("q_q_dist", q_q_dist)
    g_g = _as_2d("g_g_dist", g_g_dist)
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q):
        raise ValueError(
            f"q_q_dist has shape {q_q.shape} but q_g_dist {q_g.shape} implies ({num_q}, {num_q}); "
            "pass the query-query distances of the same queries"
        )
    if g_g.shape != (num_g, num_g):
        raise ValueError(
            f"g_g_dist has shape {g_g.shape} but q_g_dist {q_g.shape} implies ({num_g}, {num_g}); "
            "pass the gallery-gallery distances of the same gallery"
        )
    _check_params(k1, k2, lambda_value, max_memory_gb)
    source = _DistanceBlocks(q_g, q_q, g_g, torch.device(device or "cpu"))
    return _k_reciprocal(source, k1, k2, lambda_value, int(max_memory_gb * _BYTES_PER_GB))


def re_rank_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    max_memory_gb: float = 1.0,
    approximate: bool = False,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Re-rank from features, computing distances chunk by chunk (no N x N matrix).

    Equals ``re_rank(d(q, g), d(q, q), d(g, g), ...)`` with ``d`` the Euclidean distance (so the
    ranking uses squared Euclidean distances, as in the paper) or the cosine distance
    ``1 - cos``, computed in float32.

    With ``approximate=True`` the neighbours of gallery items are shortlisted in a 64-d PCA
    projection and re-scored exactly, and their normalising maximum comes from the shortlist's
    farthest point and the queries; query rows stay exact. Faster for high-dimensional features;
    see benchmarks/results/rerank.md for its effect on mAP.

    ``device`` is where the features are held and the distances computed (e.g. ``"cuda"``;
    default: the device of a GPU tensor input, else the CPU).
    """
    qf = _as_features("query_features", query_features)
    gf = _as_features("gallery_features", gallery_features)
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"query features have {qf.shape[1]} dimensions and gallery features {gf.shape[1]}; "
            "extract both with the same model"
        )
    check_metric(metric, FEATURE_METRICS)
    _check_params(k1, k2, lambda_value, max_memory_gb)
    budget = int(max_memory_gb * _BYTES_PER_GB)
    if device is None:
        device = next((t.device for t in (query_features, gallery_features)
                       if isinstance(t, torch.Tensor) and t.device.type != "cpu"), "cpu")
    source = _Features(qf, gf, metric, approximate, torch.device(device))
    return _k_reciprocal(source, k1, k2, lambda_value, budget)


def _check_params(k1: int, k2: int, lambda_value: float, max_memory_gb: float) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value!r}")
    if not max_memory_gb > 0:
        raise ValueError(f"max_memory_gb must be positive, got {max_memory_gb!r}")


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    return array


def _as_features(name: str, features: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(features).detach()
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {tuple(tensor.shape)}")
    return tensor.to(torch.float32)


class _DistanceBlocks:
    """The reference's (Q+G)^2 matrix, read from the caller's three blocks without copying them.

    Row ``i`` of the reference's normalised matrix is column ``i`` of the stacked distances,
    squared in the inputs' common dtype, cast to float32 and divided by its maximum.
    """

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray,
                 device: torch.device) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.device = device
        self.num_q, self.num_g = q_g.shape
        self.num = self.num_q + self.num_g
        self.dtype = np.result_type(q_g, q_q, g_g)

    def rows_per_chunk(self, budget: int) -> int:
        # The float32 row chunk, its squared source in the common dtype, torch.topk's scratch.
        per_row = self.num * (4 + 2 * self.dtype.itemsize + 8)
        return max(1, budget // per_row)

    def scan(self, start: int, stop: int, k: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Sorted k nearest, maximum and (query rows only) normalised row chunk [start, stop)."""
        q = self.num_q
        rows = np.empty((stop - start, self.num), dtype=np.float32)
        if stop <= q:
            left, right = self.q_q[:, start:stop].T, self.q_g[start:stop]
        else:
            left, right = self.q_g[:, start - q : stop - q].T, self.g_g[:, start - q : stop - q].T
        _square_into(left, rows[:, :q], self.dtype)
        _square_into(right, rows[:, q:], self.dtype)
        return _normalise_and_search(torch.from_numpy(rows).to(self.device), k, stop <= q)

    def squared_pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Unnormalised entries (i, j) of the reference's matrix, i.e. distance (j, i) squared."""
        q = self.num_q
        values = np.empty(len(i), dtype=self.dtype)
        i_query, j_query = i < q, j < q
        for mask, block, rows, cols in (
            (i_query & j_query, self.q_q, j, i),
            (i_query & ~j_query, self.q_g, i, j - q),
            (~i_query & j_query, self.q_g, j, i - q),
            (~i_query & ~j_query, self.g_g, j - q, i - q),
        ):
            values[mask] = block[rows[mask], cols[mask]]
        return np.square(values).astype(np.float32)


class _Features:
    """Distances computed from features on demand, in float32 with torch."""

    def __init__(self, qf: torch.Tensor, gf: torch.Tensor, metric: str, approximate: bool,
                 device: torch.device) -> None:
        self.device = device
        self.feats = torch.cat([qf.to(device), gf.to(device)])
        if metric == "cosine":
            self.feats = torch.nn.functional.normalize(self.feats, dim=1)
        self.metric = metric
        self.num_q, self.num_g = qf.shape[0], gf.shape[0]
        self.num = self.num_q + self.num_g
        self.sq_norms = (self.feats * self.feats).sum(1)
        self.projected = None
        if approximate and self.feats.shape[1] > _APPROX_DIM:
            self.projected = _pca_projection(self.feats, _APPROX_DIM)
            self.projected_sq_norms = (self.projected * self.projected).sum(1)

    def rows_per_chunk(self, budget: int) -> int:
        # Distance rows, their squares, torch.topk's scratch.
        return max(1, budget // (self.num * 16))

    def _squared(
        self, feats: torch.Tensor, sq_norms: torch.Tensor, rows: slice, cols: slice = slice(None)
    ) -> torch.Tensor:
        inner = feats[rows] @ feats[cols].T
        if self.metric == "cosine":
            return (1.0 - inner).square_()
        inner.mul_(-2.0).add_(sq_norms[rows, None]).add_(sq_norms[None, cols])
        return inner.clamp_min_(0.0)

    def scan(self, start: int, stop: int, k: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.projected is not None and start >= self.num_q:
            return self._scan_approximate(start, stop, k)
        rows = self._squared(self.feats, self.sq_norms, slice(start, stop))
        return _normalise_and_search(rows, k, stop <= self.num_q)

    def _scan_approximate(self, start: int, stop: int, k: int) -> tuple[np.ndarray, np.ndarray, None]:
        rows = self._squared(self.projected, self.projected_sq_norms, slice(start, stop))
        num_candidates = min(self.num, _APPROX_CANDIDATES_PER_NEIGHBOUR * k)
        candidates = torch.topk(rows, num_candidates, dim=1, largest=False).indices
        farthest = rows.argmax(dim=1, keepdim=True)
        del rows
        own = torch.arange(start, stop, device=self.device)[:, None]
        exact = self._squared_pairs(own.expand_as(candidates), candidates).view(candidates.shape)
        # Exact distances to all queries are cheap next to the gallery-gallery block.
        to_queries = self._squared(self.feats, self.sq_norms, slice(start, stop), slice(self.num_q))
        row_max = torch.maximum(self._squared_pairs(own, farthest), to_queries.amax(1))
        order = torch.topk(exact, k, dim=1, largest=False, sorted=True).indices
        nearest = torch.gather(candidates, 1, order)
        return nearest.cpu().numpy(), row_max.cpu().numpy(), None

    def _squared_pairs(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        i, j = i.reshape(-1), j.reshape(-1)
        out = torch.empty(len(i), device=self.device)
        # Gather into two small reused buffers: fresh large gathers cost more in page faults
        # than in arithmetic.
        step = max(1, _PAIR_BUFFER_BYTES // (4 * self.feats.shape[1]))
        buf_a = torch.empty(min(step, len(i)), self.feats.shape[1], device=self.device)
        buf_b = torch.empty_like(buf_a)
        for lo in range(0, len(i), step):
            hi = min(lo + step, len(i))
            a = torch.index_select(self.feats, 0, i[lo:hi], out=buf_a[: hi - lo])
            b = torch.index_select(self.feats, 0, j[lo:hi], out=buf_b[: hi - lo])
            if self.metric == "cosine":
                out[lo:hi] = (1.0 - a.mul_(b).sum(1)).square_()
            else:
                out[lo:hi] = a.sub_(b).square_().sum(1)
        return out

    def squared_pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i_t, j_t = (torch.from_numpy(x).to(self.device) for x in (i, j))
        return self._squared_pairs(i_t, j_t).cpu().numpy()


def _pca_projection(feats: torch.Tensor, dim: int) -> torch.Tensor:
    """Project onto the top principal directions (distances shrink, neighbours mostly stay)."""
    mean = feats.mean(0)
    order = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(0))
    sample = feats[order.to(feats.device)]
    sample = sample[: min(len(sample), 50_000)] - mean
    _, _, vh = torch.linalg.svd(sample.T @ sample)
    return (feats - mean) @ vh[:dim].T


def _square_into(block: np.ndarray, out: np.ndarray, dtype: np.dtype) -> None:
    # The reference squares in the inputs' common dtype and only then casts to float32.
    if block.dtype == dtype:
        np.square(block, out=out, casting="same_kind")
    else:
        np.square(block.astype(dtype), out=out, casting="same_kind")


def _normalise_and_search(rows: torch.Tensor, k: int, keep_rows: bool
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows divided by their maximum, in place; the indices of each row's k smallest entries in
    increasing order (torch.topk is ~3x faster than np.argpartition), the maxima, and the
    normalised rows on the CPU if ``keep_rows``."""
    row_max = rows.amax(dim=1)
    rows.div_(row_max[:, None])
    nearest = torch.topk(rows, k, dim=1, largest=False, sorted=True).indices
    return (nearest.cpu().numpy(), row_max.cpu().numpy(),
            rows.cpu().numpy() if keep_rows else None)


def _k_reciprocal(
    source: _DistanceBlocks | _Features, k1: int, k2: int, lambda_value: float, budget: int
) -> np.ndarray:
    num, num_q, num_g = source.num, source.num_q, source.num_g
    k_fwd = min(k1 + 1, num)
    k_half = min(int(np.around(k1 / 2.0)) + 1, num)
    k_qe = min(k2, num)
    k_keep = max(k_fwd, k_qe)

    # 1. Nearest neighbours and row maxima, one chunk of rows at a time; the query rows' gallery
    # part of the normalised matrix is the original-distance term of the result.
    nearest = np.empty((num, k_keep), dtype=np.int64)
    row_max = np.empty(num, dtype=np.float32)
    result = np.empty((num_q, num_g), dtype=np.float32)
    step = source.rows_per_chunk(budget)
    for side_start, side_stop in ((0, num_q), (num_q, num)):
        for start in range(side_start, side_stop, step):
            stop = min(start + step, side_stop)
            nearest[start:stop], row_max[start:stop], rows = source.scan(start, stop, k_keep)
            if rows is not None:
                result[start:stop] = rows[:, num_q:]
            del rows

    # 2. Sparse k-reciprocal encodings V.
    encoding = _encodings(source, nearest, row_max, k_fwd, k_half, budget)

    # 3. Local query expansion: each row becomes the mean of its k2 nearest rows.
    if k2 != 1:
        expand = sp.csr_matrix(
            (
                np.ones(num * k_qe, dtype=np.float32),
                nearest[:, :k_qe].ravel(),
                np.arange(0, num * k_qe + 1, k_qe),
            ),
            shape=(num, num),
        )
        encoding = expand @ encoding
        encoding.data /= np.float32(k_qe)
    del nearest

    # 4. Jaccard distance of each query to each gallery item, combined with the original term.
    _combine_jaccard(encoding, result, num_q, lambda_value, budget)
    return result


def _reciprocal_mask(neighbours: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """Which forward neighbours of each row have that row among their own forward neighbours."""
    return (neighbours[neighbours[row_ids]] == row_ids[:, None, None]).any(axis=2)


def _encodings(
    source: _DistanceBlocks | _Features,
    nearest: np.ndarray,
    row_max: np.ndarray,
    k_fwd: int,
    k_half: int,
    budget: int,
) -> sp.csr_matrix:
    num = source.num
    forward = nearest[:, :k_fwd]
    half = nearest[:, :k_half]
    # Half-size reciprocal sets of every item (candidates for the expansion), -1 padded.
    half_sets = np.full_like(half, -1)
    per_row = k_fwd * k_half * (k_fwd + 24) + k_fwd * 16
    step = max(1, budget // 4 // per_row)
    for start in range(0, num, step):
        ids = np.arange(start, min(start + step, num))
        mask = _reciprocal_mask(half, ids)
        half_sets[ids] = np.where(mask, half[ids], -1)

    pieces = []
    for start in range(0, num, step):
        ids = np.arange(start, min(start + step, num))
        recip_mask = _reciprocal_mask(forward, ids)
        recip = np.where(recip_mask, forward[ids], -2)
        cand_sets = half_sets[forward[ids]]  # (rows, k_fwd, k_half)
        overlap = (cand_sets[..., None] == recip[:, None, None, :]).any(axis=3).sum(axis=2)
        cand_size = (cand_sets >= 0).sum(axis=2)
        accept = recip_mask & (overlap > 2.0 / 3 * cand_size)
        added = accept[..., None] & (cand_sets >= 0)
        local = np.arange(len(ids))
        row_idx = np.concatenate(
            [
                np.broadcast_to(local[:, None], recip.shape)[recip_mask],
                np.broadcast_to(local[:, None, None], cand_sets.shape)[added],
            ]
        )
        col_idx = np.concatenate([recip[recip_mask], cand_sets[added]])
        # Duplicates collapse to one entry per (row, column); the stored count is replaced below.
        piece = sp.csr_matrix(
            (np.ones(len(row_idx), dtype=np.float32), (row_idx, col_idx)), shape=(len(ids), num)
        )
        piece.sum_duplicates()
        rows_of_entries = np.repeat(local, np.diff(piece.indptr))
        global_rows = rows_of_entries + start
        normalised = source.squared_pairs(global_rows, piece.indices.astype(np.int64))
        normalised /= row_max[global_rows]
        weight = np.exp(-normalised)
        total = np.bincount(rows_of_entries, weights=weight, minlength=len(ids)).astype(np.float32)
        piece.data = weight / total[rows_of_entries]
        pieces.append(piece)
    return sp.vstack(pieces, format="csr")


def _combine_jaccard(
    encoding: sp.csr_matrix, result: np.ndarray, num_q: int, lambda_value: float, budget: int
) -> None:
    """result <- (1 - lambda) * jaccard + lambda * result, for a few queries at a time.

    sum_k min(V[q, k], V[g, k]) is accumulated over the nonzeros k of each query row, joining
    them with the gallery rows that are nonzero in column k (the reference's inverted index).
    """
    num_g = result.shape[1]
    queries = encoding[:num_q]
    gallery = encoding[num_q:].tocsc()
    col_count = np.diff(gallery.indptr)
    # Joined (query, gallery, k) triplets per query, to size the chunks.
    entry_rows = np.repeat(np.arange(num_q), np.diff(queries.indptr))
    pairs_per_query = np.bincount(entry_rows, weights=col_count[queries.indices], minlength=num_q).astype(
        np.int64
    )
    max_pairs = max(1, budget // 2 // 64)
    max_rows = max(1, budget // 2 // (num_g * 24))
    cum = np.concatenate([[0], np.cumsum(pairs_per_query)])
    start = 0
    while start < num_q:
        stop = int(np.searchsorted(cum, cum[start] + max_pairs, side="right")) - 1
        stop = min(max(stop, start + 1), start + max_rows, num_q)
        lo, hi = queries.indptr[start], queries.indptr[stop]
        ks, values = queries.indices[lo:hi], queries.data[lo:hi]
        local_rows = np.repeat(np.arange(stop - start), np.diff(queries.indptr[start : stop + 1]))
        counts = col_count[ks]
        offsets = np.cumsum(counts) - counts
        pos = np.repeat(gallery.indptr[ks] - offsets, counts) + np.arange(counts.sum())
        minima = np.minimum(np.repeat(values, counts), gallery.data[pos])
        flat = np.repeat(local_rows * num_g, counts) + gallery.indices[pos]
        shared = np.bincount(flat, weights=minima, minlength=(stop - start) * num_g)
        shared = shared.astype(np.float32).reshape(stop - start, num_g)
        jaccard = np.float32(1.0) - shared / (np.float32(2.0) - shared)
        block = result[start:stop]
        block *= np.float32(lambda_value)
        block += jaccard * np.float32(1.0 - lambda_value)
        start = stop
