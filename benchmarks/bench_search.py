"""Gallery search latency: one query against 100k and 1M gallery features of 2,688 dims.

Run: .venv/bin/python benchmarks/bench_search.py [--sizes 100000 500000 1000000] [--repeats 5] [--k 10]

Baseline: what one writes without an index -- reidkit's ``compute_distance`` to the whole gallery
then a full ``np.argsort``. Measured: ``GalleryIndex`` with the default (torch) backend and with
faiss (``IndexFlatL2``, run where its float32 copy fits too), euclidean metric, float32 in
memory. Galleries that would not fit in
memory as float32 next to other jobs (1M x 2,688 x 4 B = 10.7 GB) are stored as float16 in a
memory-mapped file instead and searched with the torch backend only (the baseline and faiss both
need a float32 copy of the whole gallery). Every variant returns the same top-k, checked.
Random Gaussian features; the median of ``--repeats`` searches after one warm-up is reported.
Writes benchmarks/results/search.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.evaluation.distance import compute_distance  # noqa: E402
from reidkit.retrieval.search import GalleryIndex  # noqa: E402

DIM = 2688
ROWS_PER_BLOCK = 50_000


def available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    return info["MemAvailable"]


def make_gallery(n: int, folder: Path, budget: int) -> tuple[np.ndarray, str]:
    """Random features: float32 in memory if that fits in ``budget`` bytes, else float16 on disk."""
    rng = np.random.default_rng(0)
    if n * DIM * 4 <= budget:
        return rng.standard_normal((n, DIM), dtype=np.float32), "float32, in memory"
    path = folder / f"gallery_{n}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, ROWS_PER_BLOCK):
        rows = min(ROWS_PER_BLOCK, n - start)
        out[start:start + rows] = rng.standard_normal((rows, DIM), dtype=np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r"), "float16, memory-mapped file"


def timed(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    result = run()  # warm-up: page cache, allocator, thread pools
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="largest share of the available memory a float32 gallery may take")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/search.md")
    args = parser.parse_args()
    has_faiss = importlib.util.find_spec("faiss") is not None
    query = np.random.default_rng(1).standard_normal((1, DIM), dtype=np.float32)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        for n in args.sizes:
            budget = int(args.memory_fraction * available_bytes())
            gallery, storage = make_gallery(n, Path(tmp), budget)
            in_memory = gallery.dtype == np.float32
            variants: dict[str, Callable[[], Callable[[], np.ndarray]]] = {}
            if in_memory:
                variants["compute_distance + argsort (baseline)"] = lambda g=gallery: (
                    lambda: np.argsort(compute_distance(query, g)[0])[None, :args.k])
            variants["GalleryIndex torch"] = lambda g=gallery: (
                lambda i=GalleryIndex(g, backend="torch"): i.search(query, args.k)[1])
            if has_faiss and in_memory and 2 * gallery.nbytes <= budget:  # faiss holds a copy
                variants["GalleryIndex faiss"] = lambda g=gallery: (
                    lambda i=GalleryIndex(g, backend="faiss"): i.search(query, args.k)[1])
            elif has_faiss and in_memory:
                notes.append(f"n={n:,}: faiss not run, its float32 copy of the gallery would not "
                             "fit in the memory budget next to the gallery.")
            results: dict[str, tuple[float, float]] = {}
            reference = None
            for name, build in variants.items():
                start = time.perf_counter()
                run = build()
                build_s = time.perf_counter() - start
                median, top = timed(run, args.repeats)
                if reference is None:
                    reference = top
                elif not np.array_equal(top, reference):
                    raise AssertionError(f"{name} returned a different top-{args.k} at n={n}")
                results[name] = (median, build_s)
                del run
            base = next(iter(results.values()))[0]
            for name, (median, build_s) in results.items():
                rows.append(f"| {n:,} | {storage} | {name} | {1000 * median:.1f} | "
                            f"{base / median:.2f} | {build_s:.1f} |")
                print(rows[-1], flush=True)
            if not in_memory:
                notes.append(f"n={n:,}: float32 would need {n * DIM * 4 / 1e9:.1f} GB, more than "
                             f"{args.memory_fraction:.0%} of the {available_bytes() / 1e9:.1f} GB "
                             "available, so it was stored as float16 in a memory-mapped file; the "
                             "baseline and faiss (float32 copies) were not run; speed-up is vs. "
                             "the first row of that size.")
            del gallery

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    command = (f".venv/bin/python benchmarks/bench_search.py --sizes {' '.join(map(str, args.sizes))} "
               f"--repeats {args.repeats} --k {args.k}")
    markdown = "\n".join([
        "## Gallery search latency (one query, exact top-k, 2,688-d)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch "
        f"threads), torch {torch.__version__}, numpy {np.__version__}, faiss "
        f"{metadata.version('faiss-cpu') if has_faiss else 'not installed'}; load average at the "
        f"end {load}  ",
        f"Euclidean metric, k={args.k}, median of {args.repeats} searches after a warm-up. "
        "Build = index construction (norms; faiss copies the gallery). All variants returned "
        "the same top-k.",
        "",
        "| gallery | storage | method | ms / query | speed-up vs. first row | build (s) |",
        "|---:|---|---|---:|---:|---:|",
        *rows,
        "",
        *[f"- {note}" for note in notes],
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
