"""CMC, mAP and mINP of a query-gallery distance matrix under the Market-1501 and CUHK03 protocols.

The reference evaluators (Market-1501's MATLAB code, torchreid) sort every gallery row and walk it
query by query. Here, for each query, only the rank of each correct match among the kept gallery
items is needed, and that rank is the number of kept items closer to the query. Each chunk of query
rows is therefore sorted by value only (several times faster than an argsort) and the match
distances are looked up in the sorted rows with a batched binary search. The metrics follow from
the match ranks in closed form, so no Python loop runs over gallery items. Memory beyond the
distance matrix is one chunk of rows (about 64 MB by default).

Junk: gallery pid -1 is removed everywhere (torchreid instead relies on its data set loaders having
dropped those images; the results agree when they have). Distractors (pid 0) are ordinary
non-matching items.

Ties: items at equal distance are ordered by gallery index, as ``np.argsort(kind="stable")`` would.
The reference implementations use numpy's default, unstable argsort, so results equal theirs
exactly whenever distances are untied.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

Protocol = Literal["market1501", "cuhk03"]
APMode = Literal["standard", "official"]
PROTOCOLS: tuple[str, ...] = ("market1501", "cuhk03")
AP_MODES: tuple[str, ...] = ("standard", "official")

# Default chunk: the per-chunk working arrays stay near this many bytes.
_CHUNK_BYTES = 64 << 20
# Bytes per (query, repeat, gallery identity) of the CUHK03 sampling arrays.
_SAMPLE_BYTES = 32


@dataclass(frozen=True)
class RankResult:
    """Ranking metrics averaged over the queries that have at least one valid match.

    ``cmc[k]`` is the fraction of those queries whose first correct match is at rank ``k + 1`` or
    better; ``mAP`` and ``mINP`` are fractions in [0, 1] as well.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_queries: int
    protocol: str = "market1501"
    ap: str = "standard"

    def summary(self, ranks: Sequence[int] = (1, 5, 10, 20)) -> str:
        """One line with mAP, mINP and the CMC at ``ranks``, in percent."""
        parts = [f"mAP {100 * self.mAP:.2f}%", f"mINP {100 * self.mINP:.2f}%"]
        parts += [f"rank-{r} {100 * self.cmc[r - 1]:.2f}%" for r in ranks if 1 <= r <= len(self.cmc)]
        return (" | ".join(parts) + f" ({self.num_valid_queries}/{self.num_queries} valid queries,"
                f" protocol {self.protocol}, AP {self.ap})")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict; metrics as fractions in [0, 1] like the attributes."""
        return {
            "mAP": self.mAP,
            "mINP": self.mINP,
            "rank1": float(self.cmc[0]),
            "cmc": [float(x) for x in self.cmc],
            "num_valid_queries": self.num_valid_queries,
            "num_queries": self.num_queries,
            "protocol": self.protocol,
            "ap": self.ap,
        }


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_labels(x: Any, name: str, length: int, axis_name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of ints, got shape {arr.shape}")
    if len(arr) != length:
        raise ValueError(f"len({name}) is {len(arr)} but distmat has {length} {axis_name}; pass "
                         f"one label per distmat {'row' if axis_name == 'rows' else 'column'}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class _Gallery:
    """Gallery items grouped by identity, junk (pid -1) dropped; columns are 'kept' positions."""

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray) -> None:
        kept = np.flatnonzero(g_pids != -1)
        self.columns = None if len(kept) == len(g_pids) else kept
        self.cams = g_camids[kept]
        pids = g_pids[kept]
        # Kept positions grouped by pid, each group in gallery order (stable sort).
        self.by_pid = np.argsort(pids, kind="stable")
        self.ids, self.starts, self.counts = np.unique(
            pids[self.by_pid], return_index=True, return_counts=True)
        self.size = len(kept)

    def rows(self, distmat: np.ndarray, start: int, stop: int) -> np.ndarray:
        """A writable copy of distmat[start:stop] restricted to the kept columns."""
        block = distmat[start:stop]
        if self.columns is None:
            return np.array(block, copy=True)
        return np.take(block, self.columns, axis=1)


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    protocol: Protocol = "market1501",
    ap: APMode = "standard",
    repeats: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP of ``distmat`` (Q x G, smaller is closer) under a re-ID protocol.

    For each query, gallery items of the same pid and camera, and gallery items of pid -1 (junk),
    are removed; queries with no correct match left are skipped (``num_valid_queries`` counts the
    rest). ``ap="standard"`` averages the precision at each correct match (what torchreid and
    fast-reid report); ``ap="official"`` is the Market-1501 release's trapezoidal AP, the mean of the
    precision just before and at each match. mINP is the number of matches over the rank of the
    last one.

    ``protocol="cuhk03"`` computes the CMC single-gallery-shot: one kept gallery item per identity
    is drawn at random (``repeats`` times, seeded by ``seed``, independently per query) and the CMC
    is averaged over the draws; mAP and mINP use the whole kept gallery, as torchreid does.
    ``max_rank`` larger than the gallery is clipped to the gallery size with a warning.
    ``chunk_size`` is the number of query rows processed at once (default: about 64 MB of work).
    """
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be a 2-D (num_query, num_gallery) array, got shape "
                         f"{dist.shape}")
    if not np.issubdtype(dist.dtype, np.floating):
        if not np.issubdtype(dist.dtype, np.number) or np.iscomplexobj(dist):
            raise TypeError(f"distmat must hold real numbers, got dtype {dist.dtype}")
        dist = dist.astype(np.float64)
    elif dist.dtype == np.float16:
        dist = dist.astype(np.float32)
    num_q, num_g = dist.shape
    setup = RankSetup(num_q, num_g, q_pids, g_pids, q_camids, g_camids, max_rank, protocol, ap,
                      repeats, seed, chunk_size, "distmat")
    if chunk_size is None:
        row_bytes = setup.gallery.size * dist.itemsize * 2
        chunk_size = max(1, _CHUNK_BYTES // max(row_bytes, setup.sample_bytes_per_query))
    for start in range(0, num_q, chunk_size):
        setup.add(dist, start, min(start + chunk_size, num_q))
    return setup.result()


class RankSetup:
    """Checked labels and options of one evaluation, and the metrics accumulated chunk by chunk.

    ``add`` evaluates a chunk of queries from its distance rows; chunks must be added in query
    order (the CUHK03 draws come from one stream), and then the result does not depend on chunking.
    """

    def __init__(self, num_q: int, num_g: int, q_pids: Any, g_pids: Any, q_camids: Any,
                 g_camids: Any, max_rank: int, protocol: str, ap: str, repeats: int, seed: int,
                 chunk_size: int | None, source: str) -> None:
        self.q_pids = _as_labels(q_pids, "q_pids", num_q, "rows")
        self.q_camids = _as_labels(q_camids, "q_camids", num_q, "rows")
        g_pids = _as_labels(g_pids, "g_pids", num_g, "columns")
        g_camids = _as_labels(g_camids, "g_camids", num_g, "columns")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if ap not in AP_MODES:
            raise ValueError(f"unknown ap {ap!r}; choose one of {', '.join(AP_MODES)}")
        if max_rank < 1:
            raise ValueError(f"max_rank must be at least 1, got {max_rank}")
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        if num_q == 0 or num_g == 0:
            raise ValueError(f"{source} is empty ({num_q} queries x {num_g} gallery items); "
                             "evaluation needs queries and a gallery")
        self.gallery = _Gallery(g_pids, g_camids)
        if self.gallery.size == 0:
            raise ValueError("every gallery item has pid -1 (junk); no query can have a match")
        if max_rank > num_g:
            warnings.warn(f"max_rank={max_rank} is larger than the gallery ({num_g} items); the CMC "
                          f"is reported up to rank {num_g}", stacklevel=3)
            max_rank = num_g
        self.num_q, self.max_rank, self.protocol, self.ap, self.repeats = (
            num_q, max_rank, protocol, ap, repeats)
        self.rng = np.random.default_rng(seed) if protocol == "cuhk03" else None
        # Bytes per query of the CUHK03 sampling arrays (0 for market1501).
        self.sample_bytes_per_query = (
            repeats * len(self.gallery.ids) * _SAMPLE_BYTES if self.rng is not None else 0)
        # First-match ranks counted in integers (per draw under cuhk03): exact whatever the chunking.
        self.first_hist = np.zeros(max_rank + 1, dtype=np.int64)
        # Per-query AP and INP, summed exactly at the end so that chunking cannot change a bit.
        self.ap_parts: list[np.ndarray] = []
        self.inp_parts: list[np.ndarray] = []
        self.num_valid = 0

    def add(self, dist: np.ndarray, start: int, stop: int, offset: int = 0) -> None:
        """Evaluate queries ``start:stop``, whose distances are rows ``start - offset:stop - offset``
        of ``dist`` (a whole Q x G matrix when ``offset`` is 0, or a block of query rows)."""
        out = _evaluate_chunk(dist, start - offset, stop - offset, self.q_pids[offset:],
                              self.q_camids[offset:], self.gallery, self.max_rank,
                              self.ap == "official", self.rng, self.repeats)
        self.first_hist += out[0]
        self.ap_parts.append(out[1])
        self.inp_parts.append(out[2])
        self.num_valid += out[3]

    def result(self) -> RankResult:
        """The metrics of every query added so far."""
        if self.num_valid == 0:
            raise ValueError("no query has a correct match in the gallery (after removing "
                             "same-camera matches and junk); check that query and gallery pids and "
                             "camids refer to the same identities and cameras")
        draws = self.num_valid * (self.repeats if self.rng is not None else 1)
        cmc = np.cumsum(self.first_hist[:self.max_rank]) / draws
        ap_sum, inp_sum = (math.fsum(np.concatenate(p)) for p in (self.ap_parts, self.inp_parts))
        return RankResult(cmc=cmc, mAP=ap_sum / self.num_valid, mINP=inp_sum / self.num_valid,
                           num_valid_queries=self.num_valid,
                          num_queries=self.num_q, protocol=self.protocol, ap=self.ap)


def _evaluate_chunk(
    dist: np.ndarray,
    start: int,
    stop: int,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    gallery: _Gallery,
    max_rank: int,
    official: bool,
    rng: np.random.Generator | None,
    repeats: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Metrics of query rows start:stop: (histogram of first-match ranks, of every draw under
    cuhk03; AP and INP of each valid query; number of valid queries)."""
    qp, qc = q_pids[start:stop], q_camids[start:stop]
    num = stop - start
    row = np.arange(num)[:, None]

    # The same-pid gallery items of each query, padded to the largest group in the chunk.
    ident = np.searchsorted(gallery.ids, qp).clip(max=len(gallery.ids) - 1)
    group = np.where(gallery.ids[ident] == qp, gallery.counts[ident], 0)
    slot = np.arange(group.max(initial=0))
    in_group = slot < group[:, None]
    cols = gallery.by_pid[np.where(in_group, gallery.starts[ident][:, None] + slot, 0)]
    same_cam = in_group & (gallery.cams[cols] == qc[:, None])
    is_match = in_group & ~same_cam
    num_match = is_match.sum(axis=1)
    valid = num_match > 0
    if not valid.any():
        if rng is not None:
            rng.random((num, repeats, len(gallery.ids)))  # keep later draws chunking-independent
        return np.zeros(max_rank + 1, dtype=np.int64), np.zeros(0), np.zeros(0), 0

    block = gallery.rows(dist, start, stop)
    match_d = np.where(is_match, block[row, cols], np.inf).astype(block.dtype)
    if rng is not None:
        # Drawn for every query, valid or not, so that the draws do not depend on chunking.
        sample_ranks = _sample_first_ranks(block, is_match, num_match, ident, gallery, rng,
                                           repeats)
    block[np.nonzero(same_cam)[0], cols[same_cam]] = np.inf
    block.sort(axis=1)
    if np.isnan(block[:, -1]).any():  # numpy sorts NaN last
        raise ValueError("distmat contains NaN for a gallery item that is evaluated; check the "
                         "features (NaN features give NaN distances)")

    # Number of kept items strictly closer than each match. Removed items are +inf, so never
    # closer; an infinite match distance ties with them and takes the exact tie path below.
    closer = torch.searchsorted(torch.from_numpy(block), torch.from_numpy(match_d)).numpy()
    # block[closer] is the first item equal to the match distance; a second equal item is a tie.
    after = np.minimum(closer + 1, gallery.size - 1)
    tied = is_match & (closer + 1 < gallery.size) & (block[row, after] == match_d)
    for b in np.unique(np.nonzero(tied)[0]):
        original = gallery.rows(dist, start + b, start + b + 1)[0]
        original[cols[b][same_cam[b]]] = np.nan  # removed: equal to nothing
        j = np.flatnonzero(tied[b])
        before = (original[None, :] == match_d[b, j][:, None]) & (
            np.arange(gallery.size)[None, :] < cols[b, j][:, None])
        closer[b, j] += before.sum(axis=1)

    # 0-based ranks of the matches among the kept items, ascending; hit k (1-based) sits at k - 1.
    ranks = np.sort(np.where(is_match, closer, gallery.size), axis=1)[valid]
    n = num_match[valid]
    hits = slot + 1
    counted = slot < n[:, None]
    precision = hits / (ranks + 1)
    if official:
        before = np.where(ranks > 0, (hits - 1) / np.maximum(ranks, 1), 1.0)
        precision = (before + precision) / 2
    ap_values = np.where(counted, precision, 0.0).sum(axis=1) / n
    inp_values = n / (ranks[np.arange(len(n)), n - 1] + 1)

    if rng is not None:
        first = sample_ranks[valid]
        hist = np.bincount(np.minimum(first, max_rank).ravel(), minlength=max_rank + 1)
    else:
        hist = np.bincount(np.minimum(ranks[:, 0], max_rank), minlength=max_rank + 1)
    return hist, ap_values, inp_values, int(valid.sum())


def _sample_first_ranks(
    block: np.ndarray,
    is_match: np.ndarray,
    num_match: np.ndarray,
    ident: np.ndarray,
    gallery: _Gallery,
    rng: np.random.Generator,
    repeats: int,
) -> np.ndarray:
    """CUHK03 single-gallery-shot: 0-based rank of the match among one drawn item per identity.

    For query q, repeat r and gallery identity i (in increasing pid order),
    ``u = rng.random(dtype=np.float32)``, drawn in C order over (q, r, i), picks item
    ``int(u * n)`` of the identity's n kept items in gallery order; for the query's own identity
    the items are its matches (other cameras). Returns an int array of shape (rows, repeats).
    """
    num = len(block)
    row = np.arange(num)
    grouped = np.take(block, gallery.by_pid, axis=1)  # each identity's items side by side
    u = rng.random((num, repeats, len(gallery.ids)), dtype=np.float32)
    pick = (u * gallery.counts.astype(np.float32)).astype(np.int64)
    np.minimum(pick, gallery.counts - 1, out=pick)
    pick += gallery.starts
    match_slot = np.argsort(~is_match, axis=1, kind="stable")  # matches first, in gallery order
    own_k = (u[row, :, ident] * num_match[:, None].astype(np.float32)).astype(np.int64)
    own_k = np.minimum(own_k, np.maximum(num_match - 1, 0)[:, None])
    own = gallery.starts[ident][:, None] + match_slot[row[:, None], own_k]
    pick[row, :, ident] = own
    drawn_d = np.take(grouped, pick + (row * gallery.size)[:, None, None])
    own_d = drawn_d[row, :, ident][..., None]
    ranks = np.count_nonzero(drawn_d < own_d, axis=2)
    # Identities drawn at exactly the match's distance go first if their gallery index is lower.
    b, r = np.nonzero(np.count_nonzero(drawn_d == own_d, axis=2) > 1)
    if len(b):
        earlier = gallery.by_pid[pick[b, r]] < gallery.by_pid[own[b, r]][:, None]
        ranks[b, r] += np.count_nonzero((drawn_d[b, r] == own_d[b, r]) & earlier, axis=1)
    return ranks
