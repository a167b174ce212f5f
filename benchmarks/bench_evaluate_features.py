"""Streamed evaluation from features (evaluate_features) against the full-matrix path and argsort.

Sizes are those of the real test sets: Market-1501 (3,368 x 15,913), MSMT17 (11,659 x 82,161) and
Market-1501 + 500k distractors (3,368 x 515,913). Features are synthetic, 2,688-d (Pyramid's size):
each identity is a random centre and each image its centre plus Gaussian noise (sigma 4 per
dimension); distractors and junk are images of identities of their own. The gallery is stored as a
float16 .npy file and memory-mapped; queries are float32 in memory.

Each method of each case runs in a fresh subprocess, so that its peak memory is its own:

* ``evaluate_features``: the streamed path (default max_memory_gb=1.0).
* full matrix: ``compute_distance`` then ``evaluate_rank`` (only where the float32 matrix is at
  most 4 GiB; Market + 500k's 6.9 GB does not fit next to the other jobs of this machine).
* ``np.argsort(distmat, axis=1)`` of the same float32 matrix (the sort a torchreid-style evaluator
  starts with; distances not included), in blocks of 1,024 rows; for Market + 500k on the first
  256 query rows, extrapolated linearly to all queries.

Peak memory is reported two ways: ru_maxrss (resident set, which also counts the pages of the
memory-mapped gallery file that were read; those are page cache, shared and reclaimable) and the
peak of RssAnon sampled every 10 ms (the process's private memory: what evaluation allocates).

    nice -n 10 .venv/bin/python benchmarks/bench_evaluate_features.py     # -> results/evaluate_features.md
    .venv/bin/python benchmarks/bench_evaluate_features.py --cases market1501 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import AnonPeak  # noqa: E402  (benchmarks/memory.py)

from reidkit.evaluation import compute_distance, evaluate_features, evaluate_rank

DIM = 2688
SIGMA = 4.0
# name: (queries, identities, cameras, identity gallery images, distractors pid 0)
CASES = {
    "market1501": (3368, 750, 6, 13115, 2798),
    "msmt17": (11659, 3060, 15, 82161, 0),
    "market1501-500k": (3368, 750, 6, 13115, 2798 + 500_000),
}
FULL_MATRIX_LIMIT = 4 << 30
ARGSORT_BLOCK_ROWS = 1024
ARGSORT_SUBSET = 256
GEN_ROWS = 16384
RESULTS = Path(__file__).parent / "results" / "evaluate_features.md"


def make_case(name: str, folder: Path) -> None:
    """Write q.npy (float32), g.npy (float16) and labels.npz for case ``name`` into ``folder``."""
    num_q, num_ids, num_cams, num_real, num_distractors = CASES[name]
    rng = np.random.default_rng(0)
    g_pids = np.concatenate([rng.permutation(np.arange(1, num_ids + 1).repeat(
        -(-num_real // num_ids)))[:num_real], np.zeros(num_distractors, dtype=np.int64)])
    g_cams = rng.integers(0, num_cams, len(g_pids))
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_cams = rng.integers(0, num_cams, num_q)
    centres = rng.standard_normal((num_ids + 1, DIM), dtype=np.float32)
    np.savez(folder / "labels.npz", q_pids=q_pids, g_pids=g_pids, q_camids=q_cams, g_camids=g_cams)
    np.save(folder / "q.npy", centres[q_pids] + SIGMA * rng.standard_normal((num_q, DIM),
                                                                             dtype=np.float32))
    gallery = np.lib.format.open_memmap(folder / "g.npy", mode="w+", dtype=np.float16,
                                        shape=(len(g_pids), DIM))
    for start in range(0, len(g_pids), GEN_ROWS):
        pids = g_pids[start:start + GEN_ROWS]
        noise = SIGMA * rng.standard_normal((len(pids), DIM), dtype=np.float32)
        # A distractor is an identity of its own: a fresh centre.
        own = np.where((pids == 0)[:, None], rng.standard_normal((len(pids), DIM), dtype=np.float32),
                       centres[pids])
        gallery[start:start + len(pids)] = own + noise
    gallery.flush()
    del gallery


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_argsort(dist: np.ndarray) -> float:
    start = time.perf_counter()
    for row in range(0, len(dist), ARGSORT_BLOCK_ROWS):
        np.argsort(dist[row:row + ARGSORT_BLOCK_ROWS], axis=1)
    return time.perf_counter() - start


def run_method(folder: Path, method: str) -> dict:
    """Time and memory of one method on the case stored in ``folder`` (runs in a subprocess)."""
    labels = dict(np.load(folder / "labels.npz"))
    qf = np.load(folder / "q.npy")
    gf = np.load(folder / "g.npy", mmap_mode="r")
    args = (labels["q_pids"], labels["g_pids"], labels["q_camids"], labels["g_camids"])
    out: dict = {"rss_inputs": maxrss(), "anon_inputs": AnonPeak.now()}
    if method == "stream":
        with AnonPeak() as anon:
            start = time.perf_counter()
            res = evaluate_features(qf, gf, *args)
            out["seconds"] = time.perf_counter() - start
        out.update(rss_peak=maxrss(), anon_peak=anon.peak, metrics=res.as_dict())
        # argsort on a subset of rows (after the peak was taken), extrapolated.
        dist = compute_distance(qf[:ARGSORT_SUBSET], gf)
        out["argsort_seconds"] = time_argsort(dist) * len(qf) / ARGSORT_SUBSET
    else:
        with AnonPeak() as anon:
            start = time.perf_counter()
            dist = compute_distance(qf, gf)
            out["distance_seconds"] = time.perf_counter() - start
            res = evaluate_rank(dist, *args)
            out["seconds"] = time.perf_counter() - start
        out.update(rss_peak=maxrss(), anon_peak=anon.peak, metrics=res.as_dict(),
                   distmat_bytes=dist.nbytes)
        out["argsort_seconds"] = time_argsort(dist)
    return out


def added(run: dict) -> int:
    return run["anon_peak"] - run["anon_inputs"]


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (f"{cpu}, {os.cpu_count()} cores, {mem / (1 << 30):.0f} GiB RAM; numpy {np.__version__}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
            f"{platform.python_version()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--run", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.run:
        print(json.dumps(run_method(Path(opts.run[0]), opts.run[1])))
        return

    load_before = os.getloadavg()
    rows = []
    for name in opts.cases.split(","):
        num_q = CASES[name][0]
        num_g = CASES[name][3] + CASES[name][4]
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_SCRATCH")) as tmp:
            start = time.perf_counter()
            make_case(name, Path(tmp))
            print(f"{name}: data written in {time.perf_counter() - start:.0f} s", flush=True)
            methods = ["stream"] + (["full"] if num_q * num_g * 4 <= FULL_MATRIX_LIMIT else [])
            result = {}
            for method in methods:
                proc = subprocess.run([sys.executable, __file__, "--run", tmp, method],
                                      capture_output=True, text=True, check=True)
                result[method] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(name, method, json.dumps(result[method]), flush=True)
        rows.append((name, num_q, num_g, result))

    lines = [
        "## Streamed evaluation from features (`reidkit.evaluation.evaluate_features`)",
        "",
        "Command: `nice -n 10 .venv/bin/python benchmarks/bench_evaluate_features.py`  ",
        f"Machine: {machine()} (load average before the run: "
        f"{', '.join(f'{x:.1f}' for x in load_before)}; the machine is shared with other jobs)",
        "",
        f"Synthetic {DIM}-d features (identity centre + Gaussian noise, sigma {SIGMA}); gallery "
        "float16 .npy, memory-mapped; queries float32. `full matrix` = `compute_distance` + "
        "`evaluate_rank` (time includes the distances); `np.argsort` sorts the float32 matrix "
        f"(distances not included) in blocks of {ARGSORT_BLOCK_ROWS} rows"
        f"; for Market + 500k it is timed on the first {ARGSORT_SUBSET} queries and **extrapolated**. "
        "Each method in a fresh process. `private added` = peak RssAnon (sampled every 10 ms) minus "
        "RssAnon after loading the inputs: what the evaluation allocates. `RSS peak` = ru_maxrss of "
        "the whole process, which also counts the shared libraries (about 0.9 GiB of torch) and "
        "the pages of the memory-mapped gallery file that were read (page cache, shared and "
        "reclaimable).",
        "",
        "| case | Q x G | evaluate_features | full matrix | ratio | np.argsort | "
        "private added: features / full | RSS peak: features / full | same metrics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, num_q, num_g, result in rows:
        s, f = result["stream"], result.get("full")
        same = "yes" if f and s["metrics"] == f["metrics"] else ("n/a" if f is None else "**no**")
        lines.append(
            f"| {name} | {num_q:,} x {num_g:,} | {s['seconds']:.1f} s | "
            + (f"{f['seconds']:.1f} s (distances {f['distance_seconds']:.1f} s) | "
               f"**{s['seconds'] / f['seconds']:.2f}** | {f['argsort_seconds']:.1f} s | "
               if f else f"does not fit ({gib(num_q * num_g * 4)} matrix) | - | "
               f"{s['argsort_seconds']:.1f} s (extrapolated) | ")
            + f"{gib(added(s))} / {gib(added(f)) if f else '-'} | "
            f"{gib(s['rss_peak'])} / {gib(f['rss_peak']) if f else '-'} | {same} |")
    lines += ["", "Metrics (evaluate_features):", ""]
    for name, _, _, result in rows:
        m = result["stream"]["metrics"]
        lines.append(f"- {name}: mAP {100 * m['mAP']:.2f}%, rank-1 {100 * m['rank1']:.2f}%, "
                     f"mINP {100 * m['mINP']:.2f}% ({m['num_valid_queries']}/{m['num_queries']} "
                     "valid queries)")
    text = "\n".join(lines) + "\n"
    print(text)
    if not opts.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
