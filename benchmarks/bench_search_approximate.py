"""Approximate gallery search (ApproximateIndex + exact re-scoring) against exact search.

Synthetic 2,688-d features with identity structure, not pure noise: identities of 4 views x 5
images; an image is identity centre + view offset (0.35x the centre's scale) + image noise
(0.25x). Variance decays over dimensions as (1 + i/20)^-1.5 (80% of it in the top 256 directions,
dimensions shuffled so that no block of them holds it all); recall depends on this structure, so
re-measure on real features before relying on it. The gallery is float16 in a memory-mapped .npy
file. Queries are 1,000 new images of gallery identities; ground truth is the exact top-10 from
``GalleryIndex`` (exact, batched), whose time is the exact search's speed.

Stage 1 (``--select``) compares index kinds at a smaller size; stage 2 measures the default
(``DEFAULT_SPEC``) at the full size over a sweep of nprobe.

    nice -n 10 .venv/bin/python benchmarks/bench_search_approximate.py --size 200000 --select
    nice -n 10 .venv/bin/python benchmarks/bench_search_approximate.py --size 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import AnonPeak  # noqa: E402  (benchmarks/memory.py)

from reidkit.retrieval.search import DEFAULT_REFINE, DEFAULT_SPEC, ApproximateIndex, GalleryIndex

DIM = 2688
VIEWS, PER_VIEW = 4, 5
NUM_QUERIES = 1000
K = 10
GEN_ROWS = 20_000
SELECT_SPECS = ["PCA256,IVF{nlist},Flat", "PCA256,IVF{nlist},PQ32", "PCA256,HNSW32"]
HNSW_EF_SEARCH = [128, 256, 512]
RESULTS = Path(__file__).parent / "results"


def make_gallery(path: Path, size: int, seed: int = 0) -> np.ndarray:
    """Write the float16 gallery to ``path``; return the queries (float32)."""
    rng = np.random.default_rng(seed)
    scale = ((1 + np.arange(DIM) / 20) ** -0.75).astype(np.float32)[rng.permutation(DIM)]
    per_id = VIEWS * PER_VIEW
    num_ids = -(-size // per_id)
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(size, DIM))
    ids_per_chunk = GEN_ROWS // per_id
    query_ids = np.sort(rng.choice(num_ids, NUM_QUERIES, replace=False))
    queries = np.empty((NUM_QUERIES, DIM), dtype=np.float32)
    for first in range(0, num_ids, ids_per_chunk):
        n = min(ids_per_chunk, num_ids - first)
        centres = rng.standard_normal((n, DIM), dtype=np.float32)
        views = centres.repeat(VIEWS, axis=0) + 0.35 * rng.standard_normal((n * VIEWS, DIM),
                                                                           dtype=np.float32)
        images = views.repeat(PER_VIEW, axis=0)
        images += 0.25 * rng.standard_normal(images.shape, dtype=np.float32)
        images *= scale
        start = first * per_id
        stop = min(start + len(images), size)
        gallery[start:stop] = images[: stop - start]
        # Queries: a new view and image of some of these identities.
        mine = np.flatnonzero((query_ids >= first) & (query_ids < first + n))
        local = query_ids[mine] - first
        queries[mine] = scale * (centres[local] + 0.35 * rng.standard_normal((len(mine), DIM))
                                 + 0.25 * rng.standard_normal((len(mine), DIM)))
    gallery.flush()
    return queries


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def measure(index: GalleryIndex, queries: np.ndarray, truth: np.ndarray) -> dict:
    start = time.perf_counter()
    _, found = index.search(queries, K)
    batch_ms = (time.perf_counter() - start) * 1000 / len(queries)
    single = []
    for q in queries[:50]:
        start = time.perf_counter()
        index.search(q, K)
        single.append((time.perf_counter() - start) * 1000)
    return {"recall": recall_at_k(found, truth), "batch_ms": batch_ms,
            "single_ms": statistics.median(single)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--select", action="store_true", help="compare index kinds")
    parser.add_argument("--nprobe", default="8,16,32,64")
    opts = parser.parse_args()
    specs = SELECT_SPECS if opts.select else [DEFAULT_SPEC]
    load_before = os.getloadavg()
    rows, notes = [], []
    peak = AnonPeak().start()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_SCRATCH")) as tmp:
        path = Path(tmp) / "gallery.npy"
        start = time.perf_counter()
        queries = make_gallery(path, opts.size)
        notes.append(f"data written in {time.perf_counter() - start:.0f} s")
        gallery = np.load(path, mmap_mode="r")
        exact = GalleryIndex(gallery)
        start = time.perf_counter()
        _, truth = exact.search(queries, K)
        exact_ms = (time.perf_counter() - start) * 1000 / len(queries)
        start = time.perf_counter()
        exact.search(queries[0], K)
        exact_single_ms = (time.perf_counter() - start) * 1000
        print(f"exact: {exact_ms:.1f} ms/query batched, {exact_single_ms:.0f} ms single", flush=True)
        for spec in specs:
            start = time.perf_counter()
            ann = ApproximateIndex.build(gallery, spec=spec)
            build_s = time.perf_counter() - start
            ann.save(Path(tmp) / "gallery.npy.faiss")
            nbytes = (Path(tmp) / "gallery.npy.faiss").stat().st_size
            sweep = HNSW_EF_SEARCH if "HNSW" in spec else [int(x) for x in opts.nprobe.split(",")]
            for nprobe in sweep:
                ann.nprobe = nprobe
                index = GalleryIndex(gallery, approximate=ann)
                result = measure(index, queries, truth)
                result.update(spec=ann.spec, nprobe=nprobe, build_s=build_s,
                              bytes_per_vector=nbytes / opts.size)
                print(json.dumps(result), flush=True)
                rows.append(result)
            del ann, index
    private_peak = peak.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    name = "search_approximate_select" if opts.select else "search_approximate"
    cmd = (f"nice -n 10 .venv/bin/python benchmarks/bench_search_approximate.py --size {opts.size}"
           + (" --select" if opts.select else "") + f" --nprobe {opts.nprobe}")
    lines = [
        f"## Approximate gallery search at {opts.size:,} x {DIM} "
        f"({'choice of index' if opts.select else 'the default index'})",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads); load average before {', '.join(f'{x:.1f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (shared with other jobs)",
        "",
        "Synthetic features with identity structure (4 views x 5 images per identity; variance "
        "decaying as (1 + i/20)^-1.5, 80% in 256 directions), **not real features**: recall on "
        f"real features must be measured on them. Gallery float16, memory-mapped. {NUM_QUERIES:,} "
        f"queries (new images of gallery identities); recall@{K} = share of the exact top-{K} "
        f"found. Candidates per query: {DEFAULT_REFINE} x k, re-scored exactly from the float16 "
        "vectors. `batch` = the 1,000 queries in one call; `single` = median of 50 one-query "
        "calls. Bytes/vector = index file size / N (the float16 vectors, used for re-scoring, "
        "are the feature file itself and not counted).",
        "",
        f"Exact search (GalleryIndex, torch): **{exact_ms:.1f} ms/query batched**, "
        f"{exact_single_ms:.0f} ms for a single query.",
        "",
        "| index | nprobe / efSearch | recall@10 | ms/query batch | speed-up vs exact batch | "
        "ms single query | build (s) | bytes/vector |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['spec']} | {r['nprobe']} | {r['recall']:.3f} | {r['batch_ms']:.2f} | "
                     f"**{exact_ms / r['batch_ms']:.0f}x** | {r['single_ms']:.1f} | "
                     f"{r['build_s']:.0f} | {r['bytes_per_vector']:.0f} |")
    lines += ["", f"Peak private memory (RssAnon) {private_peak / (1 << 30):.2f} GiB; ru_maxrss "
              f"{rss_peak / (1 << 30):.2f} GiB (counts the memory-mapped gallery pages read, page "
              f"cache). {'; '.join(notes)}."]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
