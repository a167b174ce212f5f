"""Query-gallery distance matrices, computed in chunks of query rows."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from reidkit.errors import ReidkitError

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "sqeuclidean", "cosine")
# what features are searched, re-ranked and recorded with (sqeuclidean ranks as euclidean)
FEATURE_METRICS: tuple[str, ...] = ("euclidean", "cosine")


class UnknownMetricError(ReidkitError, ValueError):
    """A distance metric reidkit does not compute (or not for this use)."""


def check_metric(metric: str, allowed: tuple[str, ...] = METRICS) -> None:
    """Raise :class:`UnknownMetricError` unless ``metric`` is one of ``allowed``."""
    if metric not in allowed:
        raise UnknownMetricError(f"unknown metric {metric!r}; choose one of {', '.join(allowed)}")

# Rows per chunk are chosen so that one chunk of the output holds about this many elements.
_CHUNK_ELEMENTS = 1 << 24


def _as_features(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, feature_dim) array, got shape "
                         f"{tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t


def compute_distance(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Distance between every query and every gallery feature, as a (Q, G) float32 array.

    ``metric`` is ``"euclidean"`` (true L2 distance), ``"sqeuclidean"`` (its square, what torchreid
    ranks by; same ranking) or ``"cosine"`` (``1 - cos``; a zero vector has cosine 0 to everything).
    Inputs may be numpy arrays or torch tensors; ``device`` (e.g. ``"cuda"``) is where the
    arithmetic runs, by default the device of a GPU tensor input, else the CPU. Float64 inputs are
    computed in float64, anything else in float32. ``chunk_size`` is the number of query rows
    computed at once (default: about 16M output elements per chunk), so memory stays at the output
    matrix plus one chunk.
    """
    check_metric(metric)
    q = _as_features(qf, "qf")
    g = _as_features(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf must have the same feature dimension, got {q.shape[1]} and "
                         f"{g.shape[1]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    device = torch.device(device) if device is not None else (
        q.device if q.device.type != "cpu" else g.device)
    dtype = distance_dtype(q.dtype, g.dtype)
    q = q.to(device=device, dtype=dtype)
    g = g.to(device=device, dtype=dtype)
    num_q, num_g = q.shape[0], g.shape[0]
    out = np.empty((num_q, num_g), dtype=np.float32)
    if num_q == 0 or num_g == 0:
        return out
    rows = chunk_size or max(1, _CHUNK_ELEMENTS // num_g)
    with torch.no_grad():
        g, g_term = prepare_gallery(g, metric)
        for start in range(0, num_q, rows):
            block = distance_block(q[start:start + rows], g, g_term, metric)
            out[start:start + rows] = block.to(dtype=torch.float32).cpu().numpy()
    return out


def distance_dtype(q_dtype: torch.dtype, g_dtype: torch.dtype) -> torch.dtype:
    """The dtype distances are computed in: float64 if either side is float64, else float32."""
    return torch.float64 if torch.float64 in (q_dtype, g_dtype) else torch.float32


def prepare_gallery(g: torch.Tensor, metric: Metric) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gallery rows as :func:`distance_block` takes them: unit rows (cosine) or rows and |g|^2."""
    if metric == "cosine":
        return F.normalize(g, dim=1), None
    return g, g.square().sum(dim=1)


def distance_block(q: torch.Tensor, g: torch.Tensor, g_term: torch.Tensor | None,
                   metric: Metric) -> torch.Tensor:
    """Distances (len(q), len(g)) of query rows to gallery rows prepared by :func:`prepare_gallery`.

    Each entry depends only on its own query and gallery row, so a matrix assembled from blocks
    equals :func:`compute_distance` of the whole.
    """
    if metric == "cosine":
        return 1.0 - F.normalize(q, dim=1) @ g.T
    # |q|^2 + |g|^2 - 2 q.g; rounding can make it slightly negative, hence the clamp.
    block = torch.addmm(q.square().sum(dim=1, keepdim=True) + g_term, q, g.T,
                        beta=1.0, alpha=-2.0).clamp_(min=0.0)
    if metric == "euclidean":
        block.sqrt_()
    return block
