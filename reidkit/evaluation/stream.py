"""Ranking metrics straight from query and gallery features, without a query x gallery matrix.

A distance matrix is only an intermediate: 7 GB for Market-1501 with its 500k distractors, 40 GB
for 3,000 queries against 3M crops. Here the queries are taken a block at a time; the block's
distances to the whole gallery are computed chunk by chunk of gallery rows (on the CPU or a CUDA
device) into one (block, G) buffer, the block's CMC, AP and mINP are computed from it exactly as
:func:`~reidkit.evaluation.evaluate_rank` computes them for those rows, and the buffer is reused.
Memory is therefore set by ``max_memory_gb``, whatever the gallery size, and the gallery may be a
memory-mapped file (float16 or float32) that is read a chunk at a time and never copied whole.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reidkit.evaluation.distance import Metric, check_metric, distance_block, distance_dtype, prepare_gallery
from reidkit.evaluation.rank import APMode, Protocol, RankResult, RankSetup

_BYTES_PER_GB = 1 << 30
# Bytes per (query, gallery item) of a block: the float32 distances, the copy that is sorted, and
# slack for the match arrays; under cuhk03 one more copy, grouped by identity.
_BYTES_PER_PAIR = 9
_CUHK03_BYTES_PER_PAIR = 4
# Gallery rows per chunk are chosen so that a chunk holds about this many feature elements.
_GALLERY_CHUNK_ELEMENTS = 1 << 24
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def evaluate_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    metric: Metric = "euclidean",
    max_rank: int = 50,
    protocol: Protocol = "market1501",
    ap: APMode = "standard",
    repeats: int = 10,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_memory_gb: float = 1.0,
    query_block: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> RankResult:
    """CMC, mAP and mINP of query features against gallery features, in bounded memory.

    The result equals ``evaluate_rank(compute_distance(query_features, gallery_features, metric),
    ...)`` with the same protocol options (see :func:`~reidkit.evaluation.evaluate_rank`); the
    distances are computed by the same formula, so they agree to the last bit wherever the matrix
    product does (always for features exact in float32 arithmetic, such as small integers).

    Features are numpy arrays (memory-mapped ones included) or torch tensors, float16, float32 or
    float64 (computed in float64 if either side is, else float32). ``device`` is where distances are
    computed (e.g. ``"cuda"``; default: a GPU tensor's device, else the CPU); the metrics
    themselves are computed on the CPU. ``max_memory_gb`` bounds the working memory (inputs not
    counted, besides one chunk of about 16M gallery elements); ``query_block`` overrides the
    number of queries per block it implies. ``progress`` True shows a progress bar with queries/s
    on stderr; a callable is called with the number of queries finished after each block.
    """
    check_metric(metric)
    if not max_memory_gb > 0:
        raise ValueError(f"max_memory_gb must be positive, got {max_memory_gb!r}")
    if query_block is not None and query_block < 1:
        raise ValueError(f"query_block must be a positive number of queries, got {query_block}")
    qf = _check_features(query_features, "query_features")
    gf = _check_features(gallery_features, "gallery_features")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"query features have {qf.shape[1]} dimensions and gallery features "
                         f"{gf.shape[1]}; extract both with the same model")
    num_q, num_g = qf.shape[0], gf.shape[0]
    setup = RankSetup(num_q, num_g, q_pids, g_pids, q_camids, g_camids, max_rank, protocol, ap,
                      repeats, seed, query_block, "the feature pair")
    if device is None:
        device = next((t.device for t in (qf, gf) if isinstance(t, torch.Tensor)
                       and t.device.type != "cpu"), torch.device("cpu"))
    device = torch.device(device)
    dtype = distance_dtype(_torch_dtype(qf), _torch_dtype(gf))
    if query_block is None:
        per_pair = _BYTES_PER_PAIR + (_CUHK03_BYTES_PER_PAIR if protocol == "cuhk03" else 0)
        per_query = num_g * per_pair + setup.sample_bytes_per_query
        query_block = max(1, int(max_memory_gb * _BYTES_PER_GB) // per_query)
    query_block = min(query_block, num_q)

    report = _progress_reporter(progress, num_q)
    try:
        _evaluate_blocks(qf, gf, setup, metric, device, dtype, query_block, report)
    finally:
        report(0, done=True)
    return setup.result()


@torch.no_grad()
def _evaluate_blocks(qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor, setup: RankSetup,
                     metric: Metric, device: torch.device, dtype: torch.dtype, query_block: int,
                     report: Callable[..., None]) -> None:
    num_q, num_g = qf.shape[0], gf.shape[0]
    chunk_rows = max(1, _GALLERY_CHUNK_ELEMENTS // gf.shape[1])
    block = np.empty((query_block, num_g), dtype=np.float32)
    for start in range(0, num_q, query_block):
        stop = min(start + query_block, num_q)
        q = _rows(qf, start, stop, device, dtype)
        rows = block[: stop - start]
        for g_start in range(0, num_g, chunk_rows):
            g_stop = min(g_start + chunk_rows, num_g)
            g, g_term = prepare_gallery(_rows(gf, g_start, g_stop, device, dtype), metric)
            dist = distance_block(q, g, g_term, metric)
            rows[:, g_start:g_stop] = dist.to(dtype=torch.float32).cpu().numpy()
        setup.add(rows, start, stop, offset=start)
        report(stop - start)


def _check_features(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray | torch.Tensor:
    """``x`` itself (a memory map stays one), after checking its shape and dtype."""
    if not isinstance(x, torch.Tensor | np.ndarray):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, feature_dim) array, got shape "
                         f"{tuple(x.shape)}")
    floating = x.is_floating_point() if isinstance(x, torch.Tensor) else x.dtype.kind == "f"
    if not floating:
        raise TypeError(f"{name} must hold floating-point features, got dtype {x.dtype}")
    return x


def _torch_dtype(x: np.ndarray | torch.Tensor) -> torch.dtype:
    return x.dtype if isinstance(x, torch.Tensor) else torch.from_numpy(np.zeros(0, x.dtype)).dtype


def _rows(x: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device,
          dtype: torch.dtype) -> torch.Tensor:
    """Rows start:stop of x as a tensor on ``device``; only these rows of a memory map are read."""
    if isinstance(x, torch.Tensor):
        return x[start:stop].to(device=device, dtype=dtype)
    rows = x[start:stop]
    if rows.dtype != _NUMPY_DTYPES[dtype] or not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows, dtype=_NUMPY_DTYPES[dtype])
    with warnings.catch_warnings():
        # Read-only arrays (memory maps) are shared, never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(rows).to(device)


def _progress_reporter(progress: bool | Callable[[int], None], total: int) -> Callable[..., None]:
    """A function called with the queries finished after each block, and with done=True at the end."""
    if callable(progress):
        return lambda n, done=False: None if done else progress(n)
    if not progress:
        return lambda n, done=False: None
    from rich.console import Console

    from reidkit.progress import progress as progress_display

    # a bar on a terminal, plain periodic lines in logs and CI
    bar = progress_display(Console(stderr=True), transient=True)
    bar.__enter__()
    task = bar.add_task("evaluating", total=total, status="")
    began, finished = time.perf_counter(), 0

    def report(n: int, done: bool = False) -> None:
        nonlocal finished
        if done:
            bar.__exit__(None, None, None)
            return
        finished += n
        rate = finished / max(time.perf_counter() - began, 1e-9)
        bar.update(task, advance=n, status=f"{rate:,.0f} queries/s")

    return report
