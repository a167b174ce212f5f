"""Query-gallery distance matrices, computed in chunks of query rows."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "sqeuclidean", "cosine")

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
) -> np.ndarray:
    """Distance between every query and every gallery feature, as a (Q, G) float32 array.

    ``metric`` is ``"euclidean"`` (true L2 distance), ``"sqeuclidean"`` (its square, what torchreid
    ranks by; same ranking) or ``"cosine"`` (``1 - cos``; a zero vector has cosine 0 to everything).
    Inputs may be numpy arrays or torch tensors; a tensor on a GPU is computed on that GPU.
    Float64 inputs are computed in float64, anything else in float32. ``chunk_size`` is the number
    of query rows computed at once (default: about 16M output elements per chunk), so memory stays
    at the output matrix plus one chunk.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    q = _as_features(qf, "qf")
    g = _as_features(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf must have the same feature dimension, got {q.shape[1]} and "
                         f"{g.shape[1]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    device = q.device if q.device.type != "cpu" else g.device
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    q = q.to(device=device, dtype=dtype)
    g = g.to(device=device, dtype=dtype)
    num_q, num_g = q.shape[0], g.shape[0]
    out = np.empty((num_q, num_g), dtype=np.float32)
    if num_q == 0 or num_g == 0:
        return out
    rows = chunk_size or max(1, _CHUNK_ELEMENTS // num_g)

    with torch.no_grad():
        if metric == "cosine":
            g = F.normalize(g, dim=1)
        else:
            g_sq = g.square().sum(dim=1)
        for start in range(0, num_q, rows):
            qc = q[start:start + rows]
            if metric == "cosine":
                block = 1.0 - F.normalize(qc, dim=1) @ g.T
            else:
                # |q|^2 + |g|^2 - 2 q.g; rounding can make it slightly negative, hence the clamp.
                block = torch.addmm(qc.square().sum(dim=1, keepdim=True) + g_sq, qc, g.T,
                                    beta=1.0, alpha=-2.0).clamp_(min=0.0)
                if metric == "euclidean":
                    block.sqrt_()
            out[start:start + rows] = block.to(dtype=torch.float32).cpu().numpy()
    return out
