"""Exact k-nearest-neighbour search of query features in a gallery of features.

:class:`GalleryIndex` ranks the whole gallery for every query (no approximation). The default
backend is PyTorch on the CPU (or the gallery's device): the gallery is scanned in chunks of rows,
each chunk's scores go through ``torch.topk`` and are merged with the best so far, so the extra
memory is one chunk of scores, whatever the gallery size. The gallery itself is used in place
(no copy): a float32 or float16 numpy array, a memory-mapped file, or a tensor. The optional faiss
backend (``pip install faiss-cpu``) uses ``IndexFlatL2`` / ``IndexFlatIP``, which hold their own
float32 copy of the gallery.

Distances: ``"euclidean"`` is the true L2 distance ``||q - g||`` (not its square);
``"cosine"`` is ``1 - cos(q, g)``, in [0, 2], where a zero vector has cosine 0 to everything.
Both backends select candidates with fast formulas (``|g|^2 - 2 q.g``, dot products) and then
recompute the returned distances directly from the vectors, so they are exact in float32 (a query
that is in the gallery is at distance 0) and agree between backends to float32 rounding.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from reidkit.retrieval.features import FeatureSet

METRICS = ("euclidean", "cosine")
BACKENDS = ("torch", "faiss", "auto")
Metric = Literal["euclidean", "cosine"]
Backend = Literal["torch", "faiss", "auto"]

# Elements in one block of scores (query rows x gallery rows), and in one float32 gallery chunk.
_CHUNK_ELEMENTS = 1 << 24
_QUERY_BLOCK = 4096
_EPS = 1e-12  # as torch.nn.functional.normalize: zero vectors stay zero


def import_faiss() -> ModuleType:
    """The faiss module, or an ``ImportError`` that says how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise ImportError("the faiss search backend needs faiss: pip install faiss-cpu "
                          "(or use backend='torch')") from None


class GalleryIndex:
    """Exact search of a gallery of features (N, D); see the module docstring.

    ``backend="auto"`` uses PyTorch: it searches the gallery in place, where faiss first copies it,
    and it was the faster of the two in ``benchmarks/results/search.md``. ``chunk_size`` is the
    number of gallery rows scored at once (default: about 16M elements per block of scores or
    chunk of gallery).
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        metric: Metric = "euclidean",
        backend: Backend = "auto",
        *,
        chunk_size: int | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        gallery = _gallery_tensor(features)
        if gallery.shape[0] == 0:
            raise ValueError("the gallery is empty; there is nothing to search")
        self.metric: Metric = metric
        self.backend: str = "torch" if backend == "auto" else backend
        self._gallery = gallery
        self._rows = chunk_size or max(1, _CHUNK_ELEMENTS // max(self.dim, _QUERY_BLOCK))
        self._faiss_index = None
        if self.backend == "faiss":
            self._faiss_index = self._build_faiss()
        else:
            # Per-row constants, computed once: |g|^2 (euclidean) or 1 / |g| (cosine).
            norms = torch.cat([self._chunk(s).square().sum(dim=1) for s in self._starts()])
            self._row_term = norms if metric == "euclidean" else 1.0 / norms.sqrt().clamp(min=_EPS)

    @classmethod
    def from_feature_set(cls, fs: FeatureSet, metric: Metric | None = None,
                         backend: Backend = "auto", *, chunk_size: int | None = None) -> GalleryIndex:
        """Index ``fs.features``; ``metric`` defaults to the one recorded in ``fs.meta``."""
        return cls(fs.features, metric or fs.meta.get("metric", "euclidean"), backend,
                   chunk_size=chunk_size)

    def __len__(self) -> int:
        return self._gallery.shape[0]

    @property
    def dim(self) -> int:
        """The feature dimension D."""
        return self._gallery.shape[1]

    @torch.inference_mode()
    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of each query, nearest first.

        ``queries`` is (Q, D), or (D,) for one query. Returns ``(distances, indices)``, float32 and
        int64 arrays of shape (Q, min(k, len(self))): a ``k`` larger than the gallery returns the
        whole gallery, ranked. Equal distances are ordered by gallery index.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        q = torch.as_tensor(np.asarray(queries) if not isinstance(queries, torch.Tensor) else queries)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (num_queries, {self.dim}) to match the gallery, got "
                             f"shape {tuple(q.shape)}; extract them with the gallery's model")
        q = q.to(device=self._gallery.device, dtype=torch.float32)
        k = min(int(k), len(self))
        dist_parts, index_parts = [], []
        for start in range(0, q.shape[0], _QUERY_BLOCK):
            block = q[start:start + _QUERY_BLOCK]
            candidates = self._faiss_candidates(block, k) if self._faiss_index is not None \
                else self._torch_candidates(block, k)
            distances, indices = self._exact(block, candidates)
            dist_parts.append(distances)
            index_parts.append(indices)
        return (torch.cat(dist_parts).cpu().numpy().astype(np.float32, copy=False),
                torch.cat(index_parts).cpu().numpy().astype(np.int64, copy=False))

    # ------------------------------------------------------------------------------------ torch
    def _starts(self) -> range:
        return range(0, len(self), self._rows)

    def _chunk(self, start: int) -> torch.Tensor:
        return self._gallery[start:start + self._rows].float()

    def _torch_candidates(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (Q, k) of the k best gallery rows per query, by a monotone score."""
        if self.metric == "cosine":
            q = q / q.norm(dim=1, keepdim=True).clamp(min=_EPS)
        best_score = q.new_empty((q.shape[0], 0))
        best_index = torch.empty((q.shape[0], 0), dtype=torch.int64, device=q.device)
        for start in self._starts():
            chunk = self._chunk(start)
            term = self._row_term[start:start + len(chunk)]
            if self.metric == "euclidean":  # |q - g|^2 - |q|^2, the same ranking
                score = torch.addmm(term, q, chunk.T, alpha=-2.0)
            else:  # -cos(q, g)
                score = (q @ chunk.T).mul_(term).neg_()
            score, index = score.topk(min(k, len(chunk)), dim=1, largest=False, sorted=False)
            best_score = torch.cat([best_score, score], dim=1)
            best_index = torch.cat([best_index, index + start], dim=1)
            if best_score.shape[1] > k:
                best_score, keep = best_score.topk(k, dim=1, largest=False, sorted=False)
                best_index = best_index.gather(1, keep)
        return best_index

    # ------------------------------------------------------------------------------------ faiss
    def _build_faiss(self) -> Any:  # a faiss.Index; faiss is imported only here
        faiss = import_faiss()
        index = faiss.IndexFlatL2(self.dim) if self.metric == "euclidean" else faiss.IndexFlatIP(self.dim)
        for start in self._starts():
            chunk = np.ascontiguousarray(self._chunk(start).cpu().numpy(), dtype=np.float32)
            if self.metric == "cosine":
                faiss.normalize_L2(chunk)  # in place, on this chunk's copy; zero rows stay zero
            index.add(chunk)
        return index

    def _faiss_candidates(self, q: torch.Tensor, k: int) -> torch.Tensor:
        queries = np.array(q.cpu().numpy(), dtype=np.float32, order="C")  # a copy: normalised in place
        if self.metric == "cosine":
            import_faiss().normalize_L2(queries)
        _, index = self._faiss_index.search(queries, k)
        return torch.from_numpy(index).to(self._gallery.device)

    # ------------------------------------------------------------------------------------ exact
    def _exact(self, q: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances recomputed from the vectors for candidate ``index`` (Q, k), then sorted."""
        # Sort by index first, so that the stable sort by distance leaves ties in gallery order.
        index = index.sort(dim=1).values
        step = max(1, _CHUNK_ELEMENTS // (index.shape[1] * self.dim))  # bounds the (q, k, D) gather
        parts = []
        for start in range(0, len(q), step):
            qs, idx = q[start:start + step], index[start:start + step]
            rows = self._gallery[idx.reshape(-1)].float().view(*idx.shape, self.dim)
            if self.metric == "euclidean":
                parts.append((rows - qs[:, None]).norm(dim=2))
            else:
                q_unit = qs / qs.norm(dim=1, keepdim=True).clamp(min=_EPS)
                rows_unit = rows / rows.norm(dim=2, keepdim=True).clamp(min=_EPS)
                parts.append(1.0 - (rows_unit @ q_unit[:, :, None]).squeeze(2))
        dist, order = torch.cat(parts).sort(dim=1, stable=True)
        return dist, index.gather(1, order)


def _gallery_tensor(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The gallery as a 2-D float16/32 tensor sharing memory with ``features`` where possible."""
    if isinstance(features, torch.Tensor):
        t = features.detach()
    else:
        array = np.asarray(features)
        if array.dtype not in (np.float16, np.float32):
            array = array.astype(np.float32)
        array = np.ascontiguousarray(array)
        with warnings.catch_warnings():
            # A read-only array (e.g. a memory-mapped file) is shared as is: it is never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(array)
    if t.ndim != 2 or t.shape[1] == 0:
        raise ValueError(f"gallery features must be a 2-D (num_images, feature_dim) array, got "
                         f"shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if t.dtype not in (torch.float16, torch.float32):
        t = t.float()
    return t
