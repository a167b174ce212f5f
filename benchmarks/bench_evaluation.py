"""Speed and memory of reidkit.evaluation.evaluate_rank against np.argsort of the same matrix.

Problems are laid out like the real test sets (sizes, identities, cameras, distractors, junk);
distances are random with correct matches shifted closer. Each size runs in a fresh subprocess so
that its peak resident memory (ru_maxrss) is its own. Also times a per-query evaluator
written like torchreid's Python path on a subset of queries and extrapolates it to all queries.

    .venv/bin/python benchmarks/bench_evaluation.py            # full sizes -> results/evaluation.md
    .venv/bin/python benchmarks/bench_evaluation.py --quick    # small sizes, printed only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from reidkit.evaluation import evaluate_rank

# name: (queries, gallery, identities, cameras, gallery junk pid -1, gallery distractors pid 0)
CASES = {
    "market1501": (3368, 15913, 750, 6, 3819, 2798),
    "market1501-nojunk": (3368, 15913, 750, 6, 0, 2798),
    "msmt17": (11659, 82161, 3060, 15, 0, 0),
}
QUICK_CASES = {
    "market1501-quick": (842, 3978, 188, 6, 955, 700),
    "msmt17-quick": (1166, 8216, 306, 15, 0, 0),
}
BASELINE_QUERIES = 300
ARGSORT_FULL_LIMIT = 2 << 30  # bytes of int64 indices; above this argsort is timed in row blocks
ARGSORT_BLOCK_ROWS = 1024


def make_problem(spec: tuple[int, ...], seed: int = 0):
    """Distance matrix and labels; generated in row blocks so the only big array is distmat."""
    num_q, num_g, num_ids, num_cams, num_junk, num_distractors = spec
    rng = np.random.default_rng(seed)
    num_real = num_g - num_junk - num_distractors
    real = np.concatenate([np.arange(1, num_ids + 1).repeat(2),
                           rng.integers(1, num_ids + 1, num_real - 2 * num_ids)])
    g_pids = rng.permutation(np.concatenate([np.full(num_junk, -1), np.zeros(num_distractors,
                                                                               np.int64), real]))
    g_camids = rng.integers(0, num_cams, num_g)
    q_pids = rng.permutation(np.concatenate([np.arange(1, num_ids + 1),
                                             rng.integers(1, num_ids + 1, num_q - num_ids)]))
    q_camids = rng.integers(0, num_cams, num_q)
    distmat = np.empty((num_q, num_g), dtype=np.float32)
    rows = 16  # small blocks: generation must not raise the peak memory evaluation is measured by
    for start in range(0, num_q, rows):
        block = rng.standard_normal((min(rows, num_q - start), num_g), dtype=np.float32)
        block -= 2.5 * (q_pids[start:start + rows, None] == g_pids[None, :])
        distmat[start:start + rows] = block
    return distmat, q_pids, g_pids, q_camids, g_camids


def per_query_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """A per-query evaluator written like torchreid's Python path (``eval_market1501``): argsort,
    then per query a mask, a cumsum and a Python list comprehension over the gallery for AP.
    Junk (pid -1) is removed as well, so that its results equal evaluate_rank's."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap = [], []
    for i in range(len(q_pids)):
        order = indices[i]
        remove = ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])) | (
            g_pids[order] == -1)
        raw_cmc = matches[i][~remove]
        if not raw_cmc.any():
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = np.asarray([x / (k + 1.0) for k, x in enumerate(raw_cmc.cumsum())])
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def time_argsort(distmat: np.ndarray) -> tuple[float, str]:
    start = time.perf_counter()
    if distmat.size * 8 <= ARGSORT_FULL_LIMIT:
        np.argsort(distmat, axis=1)
        return time.perf_counter() - start, "whole matrix"
    for row in range(0, len(distmat), ARGSORT_BLOCK_ROWS):
        np.argsort(distmat[row:row + ARGSORT_BLOCK_ROWS], axis=1)
    return time.perf_counter() - start, f"blocks of {ARGSORT_BLOCK_ROWS} rows"


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(name: str, spec: tuple[int, ...], repeats: int) -> dict:
    start = time.perf_counter()
    problem = make_problem(spec)
    distmat, q_pids = problem[0], problem[1]
    gen_s = time.perf_counter() - start
    rss_before = maxrss_bytes()

    result = evaluate_rank(*problem)
    rss_after = maxrss_bytes()
    tracemalloc.start()
    evaluate_rank(*problem)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    eval_times, argsort_times, cuhk_times = [], [], []
    for _ in range(repeats):  # interleaved so that load changes hit both alike
        t0 = time.perf_counter()
        evaluate_rank(*problem)
        eval_times.append(time.perf_counter() - t0)
        seconds, argsort_how = time_argsort(distmat)
        argsort_times.append(seconds)
        t0 = time.perf_counter()
        cuhk = evaluate_rank(*problem, protocol="cuhk03")
        cuhk_times.append(time.perf_counter() - t0)

    subset = min(BASELINE_QUERIES, len(q_pids))
    sub_problem = (distmat[:subset], q_pids[:subset], problem[2], problem[3][:subset], problem[4])
    t0 = time.perf_counter()
    loop_cmc, loop_map = per_query_loop(*sub_problem)
    loop_s = time.perf_counter() - t0
    ours_subset = evaluate_rank(*sub_problem)
    agree = bool(np.allclose(loop_cmc, ours_subset.cmc) and np.isclose(loop_map, ours_subset.mAP))

    return {
        "case": name, "queries": spec[0], "gallery": spec[1], "ids": spec[2], "cams": spec[3],
        "junk": spec[4], "distractors": spec[5], "generate_s": gen_s,
        "evaluate_s": min(eval_times), "argsort_s": min(argsort_times), "argsort_how": argsort_how,
        "cuhk03_s": min(cuhk_times), "loop_subset": subset, "loop_subset_s": loop_s,
        "loop_extrapolated_s": loop_s * spec[0] / subset, "loop_agrees": agree,
        "distmat_bytes": distmat.nbytes, "maxrss_before": rss_before, "maxrss_after": rss_after,
        "tracemalloc_peak": traced_peak, "summary": result.summary(),
        "cuhk03_summary": cuhk.summary(),
    }


def machine_info() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
        simd = ", ".join(f for f in ("AVX512F", "AVX2") if features.get(f))
    except ImportError:
        simd = "unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB RAM; numpy {np.__version__} "
            f"(SIMD: {simd or 'none'}), torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), Python {platform.python_version()}; load average {load}")


def to_markdown(rows: list[dict], command: str, machine: str) -> str:
    gib = 2**30
    lines = [
        "## Evaluation (`reidkit.evaluation.evaluate_rank`)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}",
        "",
        "Ratio = time of `evaluate_rank` / time of `np.argsort(distmat, axis=1)` on the same "
        "float32 matrix, both best of the repeats in the same process (goal: <= 1.5 at "
        "Market-1501 size, <= 2 at MSMT17 size). The per-query loop is an evaluator written "
        "like torchreid's Python path (argsort, then per query a mask, a cumsum and a list "
        f"comprehension over the gallery for AP), timed on the first {BASELINE_QUERIES} queries "
        "and **extrapolated** linearly to all queries. `cuhk03 protocol` is evaluate_rank with "
        "protocol=\"cuhk03\" (10 single-gallery-shot draws per query).",
        "",
        "| case | Q x G | ids / cams / junk / distractors | evaluate_rank | np.argsort | ratio "
        "| cuhk03 protocol | per-query loop (extrapolated) | loop / evaluate_rank |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['queries']:,} x {r['gallery']:,} | {r['ids']:,} / {r['cams']} / "
            f"{r['junk']:,} / {r['distractors']:,} | {r['evaluate_s']:.2f} s | "
            f"{r['argsort_s']:.2f} s ({r['argsort_how']}) | "
            f"**{r['evaluate_s'] / r['argsort_s']:.2f}** | {r['cuhk03_s']:.2f} s | "
            f"{r['loop_extrapolated_s']:.1f} s | {r['loop_extrapolated_s'] / r['evaluate_s']:.0f}x |")
    lines += [
        "",
        "Peak memory (ru_maxrss of a fresh process per case; `before` is after building the "
        "distance matrix, so `extra` is what evaluation added; tracemalloc counts numpy "
        "allocations made during one `evaluate_rank` call):",
        "",
        "| case | distmat | maxrss before | maxrss after | extra (maxrss) | tracemalloc peak |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['distmat_bytes'] / gib:.2f} GiB | {r['maxrss_before'] / gib:.2f} "
            f"GiB | {r['maxrss_after'] / gib:.2f} GiB | "
            f"{(r['maxrss_after'] - r['maxrss_before']) / 2**20:.0f} MiB | "
            f"{r['tracemalloc_peak'] / 2**20:.0f} MiB |")
    lines += ["", "Metrics on these synthetic problems (sanity check; the per-query loop on its "
              "subset agrees with evaluate_rank: "
              f"{'yes' if all(r['loop_agrees'] for r in rows) else 'NO'}):", ""]
    lines += [f"- {r['case']}: {r['summary']}; cuhk03: {r['cuhk03_summary']}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; print, do not write")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (best kept)")
    parser.add_argument("--cases", nargs="*", help="subset of case names to run")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown output (default: benchmarks/results/evaluation.md for a "
                             "full run, none for --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = QUICK_CASES if args.quick else CASES

    if args.worker:
        print(json.dumps(run_case(args.worker, cases[args.worker], args.repeats)))
        return

    rows = []
    for name in args.cases or list(cases):
        if name not in cases:
            parser.error(f"unknown case {name!r}; choose from {', '.join(cases)}")
        cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(args.repeats)]
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"case {name} failed:\n{proc.stderr}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name}: evaluate_rank {r['evaluate_s']:.2f} s, argsort {r['argsort_s']:.2f} s, "
              f"ratio {r['evaluate_s'] / r['argsort_s']:.2f}", file=sys.stderr)

    command = "python benchmarks/bench_evaluation.py " + " ".join(sys.argv[1:])
    markdown = to_markdown(rows, command.strip(), machine_info())
    print(markdown)
    out_path = args.out or (None if args.quick else
                            Path(__file__).parent / "results" / "evaluation.md")
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(markdown)


if __name__ == "__main__":
    main()
