"""k-nearest-neighbour search of query features in a gallery of features, exact or approximate.

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

Million-image galleries: an :class:`ApproximateIndex` (faiss; built once from the features, saved
next to the feature file by :func:`build_index_file`) proposes a shortlist of candidates per query,
which :class:`GalleryIndex` re-scores exactly from the vectors. It is used for galleries of at
least ``APPROXIMATE_THRESHOLD`` items; smaller galleries are searched exactly, where the exact scan
is already fast. Its recall and speed are measured in benchmarks/results/search_approximate.md.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.evaluation.distance import FEATURE_METRICS, check_metric

if TYPE_CHECKING:
    from reidkit.retrieval.features import FeatureSet

BACKENDS = ("torch", "faiss", "auto")
Metric = Literal["euclidean", "cosine"]
Backend = Literal["torch", "faiss", "auto"]

# Elements in one block of scores (query rows x gallery rows), and in one float32 gallery chunk.
_CHUNK_ELEMENTS = 1 << 24
_QUERY_BLOCK = 4096
_EPS = 1e-12  # as torch.nn.functional.normalize: zero vectors stay zero

# Galleries of at least this many items are searched through an approximate index when given one.
APPROXIMATE_THRESHOLD = 100_000
# The faiss index built by default ({nlist}: inverted lists, about sqrt(N)), its search settings
# (lists probed, candidates re-scored per wanted result) and the training sample, chosen by
# measurement (benchmarks/results/search_approximate*.md): with exact re-scoring, PCA-256 IVF-flat
# and IVF-PQ32 recalled the same (0.997 at nprobe 32, 100k) and flat built 2.6x faster; HNSW32
# recalled 1.000 at a similar speed, but its cost at a million was not measured. Query time is
# mostly the exact re-scoring of the 10 x k candidates.
DEFAULT_SPEC = "PCA256,IVF{nlist},Flat"
DEFAULT_NPROBE = 32
DEFAULT_REFINE = 10
_TRAIN_PER_LIST = 40
_MIN_TRAIN = 20_000
_ADD_ROWS = 65_536
INDEX_FORMAT = "reidkit-ann/1"


class ApproximateIndexError(ReidkitError, ValueError):
    """An approximate index that cannot be built, read, or used with the gallery at hand."""


def import_faiss() -> ModuleType:
    """The faiss module, or an ``ImportError`` that says how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise MissingDependencyError("the faiss search backend and approximate index need faiss: "
                                     "pip install faiss-cpu (or use backend='torch')") from None


class GalleryIndex:
    """Exact search of a gallery of features (N, D); see the module docstring.

    ``backend="auto"`` uses PyTorch: it searches the gallery in place, where faiss first copies it,
    and it was the faster of the two in ``benchmarks/results/search.md``. ``chunk_size`` is the
    number of gallery rows scored at once (default: about 16M elements per block of scores or
    chunk of gallery).

    ``approximate``, an :class:`ApproximateIndex` built from these features, is used when the
    gallery has at least ``threshold`` items: its shortlist of ``refine * k`` candidates per query
    is re-scored exactly, and ``mode`` says ``"approximate"``; otherwise the search is exact.
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        metric: Metric = "euclidean",
        backend: Backend = "auto",
        *,
        chunk_size: int | None = None,
        approximate: ApproximateIndex | None = None,
        threshold: int = APPROXIMATE_THRESHOLD,
    ) -> None:
        check_metric(metric, FEATURE_METRICS)
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
        self._row_term: torch.Tensor | None = None
        if approximate is not None:
            approximate.check_fits(len(self), self.dim, metric)
        self._approximate = approximate if approximate is not None and len(self) >= threshold else None
        if self._approximate is None and self.backend == "faiss":
            self._faiss_index = self._build_faiss()

    @property
    def mode(self) -> str:
        """``"approximate"`` when searches go through the approximate index, else ``"exact"``."""
        return "exact" if self._approximate is None else "approximate"

    @classmethod
    def from_feature_set(cls, fs: FeatureSet, metric: Metric | None = None,
                         backend: Backend = "auto", *, chunk_size: int | None = None,
                         approximate: ApproximateIndex | None = None,
                         threshold: int = APPROXIMATE_THRESHOLD) -> GalleryIndex:
        """Index ``fs.features``; ``metric`` defaults to the one recorded in ``fs.meta``."""
        return cls(fs.features, metric or fs.meta.get("metric", "euclidean"), backend,
                   chunk_size=chunk_size, approximate=approximate, threshold=threshold)

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
            if self._approximate is not None:
                distances, indices = self._approximate_search(block, k)
            else:
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
        rows = self._gallery[start:start + self._rows]
        if rows.dtype == torch.float16 and rows.device.type == "cpu":
            return torch.from_numpy(rows.numpy().astype(np.float32))  # numpy converts ~4x faster
        return rows.float()

    def _rows_at(self, index: torch.Tensor) -> torch.Tensor:
        """Gallery rows ``index`` as float32."""
        if self._gallery.dtype == torch.float16 and self._gallery.device.type == "cpu":
            return torch.from_numpy(self._gallery.numpy()[index.numpy()].astype(np.float32))
        return self._gallery[index].float()

    def _row_terms(self) -> torch.Tensor:
        """Per-row constants, computed on first use: |g|^2 (euclidean) or 1 / |g| (cosine)."""
        if self._row_term is None:
            norms = torch.cat([self._chunk(s).square().sum(dim=1) for s in self._starts()])
            self._row_term = norms if self.metric == "euclidean" else 1.0 / norms.sqrt().clamp(min=_EPS)
        return self._row_term

    def _torch_candidates(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (Q, k) of the k best gallery rows per query, by a monotone score."""
        if self.metric == "cosine":
            q = q / q.norm(dim=1, keepdim=True).clamp(min=_EPS)
        best_score = q.new_empty((q.shape[0], 0))
        best_index = torch.empty((q.shape[0], 0), dtype=torch.int64, device=q.device)
        row_terms = self._row_terms()
        for start in self._starts():
            chunk = self._chunk(start)
            term = row_terms[start:start + len(chunk)]
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

    # ------------------------------------------------------------------------------ approximate
    def _approximate_search(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best of the approximate index's shortlist, re-scored exactly."""
        wanted = min(len(self), k * self._approximate.refine)
        candidates = torch.from_numpy(self._approximate.candidates(q.cpu().numpy(), wanted))
        missing = candidates < 0  # faiss pads with -1 when the probed lists hold too few items
        distances, indices = self._exact(q, candidates.clamp(min=0).to(self._gallery.device),
                                         missing.to(self._gallery.device))
        return distances[:, :k], indices[:, :k]

    # ------------------------------------------------------------------------------------ exact
    def _exact(self, q: torch.Tensor, index: torch.Tensor, missing: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances recomputed from the vectors for candidate ``index`` (Q, k), then sorted;
        ``missing`` candidates go last."""
        # Sort by index first, so that the stable sort by distance leaves ties in gallery order.
        index, index_order = index.sort(dim=1)
        step = max(1, _CHUNK_ELEMENTS // (index.shape[1] * self.dim))  # bounds the (q, k, D) gather
        parts = []
        for start in range(0, len(q), step):
            qs, idx = q[start:start + step], index[start:start + step]
            rows = self._rows_at(idx.reshape(-1)).view(*idx.shape, self.dim)
            if self.metric == "euclidean":
                parts.append((rows - qs[:, None]).norm(dim=2))
            else:
                q_unit = qs / qs.norm(dim=1, keepdim=True).clamp(min=_EPS)
                rows_unit = rows / rows.norm(dim=2, keepdim=True).clamp(min=_EPS)
                parts.append(1.0 - (rows_unit @ q_unit[:, :, None]).squeeze(2))
        dist = torch.cat(parts)
        if missing is not None:
            # Sorted along with the indices above; a missing slot is +inf, and so never returned
            # before a real candidate.
            dist = dist.masked_fill(missing.gather(1, index_order), float("inf"))
        dist, order = dist.sort(dim=1, stable=True)
        return dist, index.gather(1, order)


class ApproximateIndex:
    """A faiss index over gallery features (N, D) that proposes candidates for exact re-scoring.

    Built with :meth:`build` from an array or a memory map (trained on a sample, filled chunk by
    chunk, so the gallery is never copied whole); ``spec`` is a faiss ``index_factory`` string
    where ``{nlist}`` stands for about sqrt(N) inverted lists. Cosine galleries are indexed as unit
    vectors. ``nprobe`` (lists searched per query) and ``refine`` (candidates per wanted result)
    trade speed for recall; both are saved with the index.
    """

    def __init__(self, index: Any, metric: Metric, num_items: int, dim: int, *, spec: str,
                 nprobe: int = DEFAULT_NPROBE, refine: int = DEFAULT_REFINE) -> None:
        check_metric(metric, FEATURE_METRICS)
        if nprobe < 1 or refine < 1:
            raise ValueError(f"nprobe and refine must be at least 1, got {nprobe} and {refine}")
        self.index, self.metric, self.num_items, self.dim, self.spec = index, metric, num_items, dim, spec
        self.refine = refine
        self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        """Inverted lists (IVF) or graph candidates (HNSW efSearch) visited per query."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss = import_faiss()
        space = faiss.ParameterSpace()
        for name in ("nprobe", "efSearch"):
            try:
                space.set_index_parameter(self.index, name, int(value))
            except RuntimeError:  # the index has no such parameter (IVF vs HNSW)
                continue
        self._nprobe = int(value)

    @classmethod
    def build(
        cls,
        features: np.ndarray | torch.Tensor,
        metric: Metric = "euclidean",
        *,
        spec: str = DEFAULT_SPEC,
        nprobe: int = DEFAULT_NPROBE,
        refine: int = DEFAULT_REFINE,
        train_size: int | None = None,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> ApproximateIndex:
        """Train an index on a random sample of ``features`` and add all of them in chunks.

        ``train_size`` defaults to 40 vectors per inverted list (at least 20,000, at most N);
        a PCA step in ``spec`` larger than D is dropped. ``progress`` is called with the rows
        added after each chunk.
        """
        check_metric(metric, FEATURE_METRICS)
        faiss = import_faiss()
        gallery = _gallery_tensor(features)
        num, dim = gallery.shape
        nlist = max(1, 2 ** round(math.log2(math.sqrt(num))))
        steps = [step for step in spec.format(nlist=nlist).split(",")
                 if not (step.startswith("PCA") and step[3:].split("R")[0].isdigit()
                         and int(step[3:].split("R")[0]) >= dim)]
        factory = ",".join(steps)
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
        except RuntimeError as exc:
            raise ApproximateIndexError(f"faiss cannot build index {factory!r}: {exc}") from None
        size = min(num, train_size or max(_MIN_TRAIN, _TRAIN_PER_LIST * nlist))
        sample = np.sort(np.random.default_rng(seed).choice(num, size=size, replace=False))
        index.train(_as_faiss_rows(gallery[torch.from_numpy(sample)], metric))
        for start in range(0, num, _ADD_ROWS):
            rows = gallery[start:start + _ADD_ROWS]
            index.add(_as_faiss_rows(rows, metric))
            if progress is not None:
                progress(len(rows))
        return cls(index, metric, num, dim, spec=factory, nprobe=nprobe, refine=refine)

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Indices (Q, k) of each query's approximate nearest items; -1 pads short lists."""
        _, index = self.index.search(_as_faiss_rows(torch.from_numpy(np.asarray(queries)),
                                                    self.metric), k)
        return index

    def check_fits(self, num_items: int, dim: int, metric: str) -> None:
        """Raise :class:`ApproximateIndexError` unless built from a gallery of that shape and metric."""
        if (num_items, dim, metric) != (self.num_items, self.dim, self.metric):
            raise ApproximateIndexError(
                f"the approximate index was built for {self.num_items:,} x {self.dim} {self.metric} "
                f"features, not {num_items:,} x {dim} {metric}; rebuild it from this gallery "
                "(reidkit index)")

    @property
    def nbytes(self) -> int:
        """Size of the serialised index in bytes."""
        return int(import_faiss().serialize_index(self.index).size)

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` and its settings to ``path`` + ``.json``."""
        faiss = import_faiss()
        path = Path(path)
        faiss.write_index(self.index, str(path))
        Path(f"{path}.json").write_text(json.dumps(
            {"format": INDEX_FORMAT, "metric": self.metric, "num_items": self.num_items,
             "dim": self.dim, "spec": self.spec, "nprobe": self.nprobe, "refine": self.refine}))

    @classmethod
    def load(cls, path: str | Path) -> ApproximateIndex:
        """Read an index written by :meth:`save`."""
        faiss = import_faiss()
        path, settings_path = Path(path), Path(f"{path}.json")
        if not path.is_file() or not settings_path.is_file():
            raise FileNotFoundError(f"approximate index {path} (with {settings_path.name}) not found; "
                                    "build it with `reidkit index`")
        settings = json.loads(settings_path.read_text())
        if settings.get("format") != INDEX_FORMAT:
            raise ApproximateIndexError(f"{settings_path} is not a reidkit approximate-index file")
        return cls(faiss.read_index(str(path)), settings["metric"], settings["num_items"],
                   settings["dim"], spec=settings["spec"], nprobe=settings["nprobe"],
                   refine=settings["refine"])


def index_path_for(feature_path: str | Path) -> Path:
    """Where the approximate index of a feature file lives: next to it, ``<name>.faiss``."""
    feature_path = Path(feature_path)
    return feature_path.with_name(feature_path.name + ".faiss")


def build_index_file(feature_path: str | Path, features: np.ndarray | torch.Tensor,
                     metric: Metric = "euclidean", **options: Any) -> Path:
    """Build an :class:`ApproximateIndex` of ``features`` (read from ``feature_path``) and save it
    next to that file; ``options`` go to :meth:`ApproximateIndex.build`. Returns its path."""
    path = index_path_for(feature_path)
    ApproximateIndex.build(features, metric, **options).save(path)
    return path


def load_index_for(feature_path: str | Path, num_items: int, dim: int,
                   metric: str) -> ApproximateIndex | None:
    """The approximate index saved next to ``feature_path``, or None when there is none.

    An index older than the feature file, or built from another gallery, raises
    :class:`ApproximateIndexError`.
    """
    feature_path = Path(feature_path)
    path = index_path_for(feature_path)
    if not path.is_file():
        return None
    if path.stat().st_mtime_ns < feature_path.stat().st_mtime_ns:
        raise ApproximateIndexError(f"{path} is older than {feature_path}; rebuild it (reidkit index)")
    index = ApproximateIndex.load(path)
    index.check_fits(num_items, dim, metric)
    return index


def _as_faiss_rows(rows: torch.Tensor, metric: str) -> np.ndarray:
    """``rows`` as a C-contiguous float32 array for faiss; for cosine, unit rows in a copy."""
    array = rows.detach().cpu().numpy()
    if metric == "cosine":
        array = np.array(array, dtype=np.float32, order="C")  # normalised in place below
        import_faiss().normalize_L2(array)
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


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


def search_subset(index: GalleryIndex, gallery: FeatureSet, queries: np.ndarray, k: int,
                  mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)`` restricted to the gallery rows where ``mask`` is True.

    Returns (distances, gallery indices) of shape (Q, min(k, rows kept)), nearest first.
    """
    if mask is None:
        return index.search(queries, k)
    rows = np.flatnonzero(mask)
    q = np.atleast_2d(queries)
    if len(rows) == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    subset = GalleryIndex(gallery.features[rows], index.metric)
    distances, indices = subset.search(q, min(k, len(rows)))
    return distances, rows[indices]
