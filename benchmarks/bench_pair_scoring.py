"""Pair-scoring throughput of MTDnet gallery ranking at VIPeR size (316 queries x 316 gallery).

Three ways to score a (query, gallery) pair with 8 passes (original/mirror x both orders):

* from pixels  -- each pair on its own: trunk on the 8 first and 8 second images, head on the 8
  pairs (the straightforward implementation; the baseline);
* trunk once   -- trunk maps of every image and mirror image cached, head on concatenated maps;
* trunk once + conv3 split -- what ``reidkit.retrieval.pair_ranking`` does: also conv3's per-image
  parts computed once per tile and summed per pair.

On a CPU the full 99,856 pairs x 8 passes take hours, so rates are measured on a sub-grid of pairs
and the full-size times are extrapolated (labelled so); ``--full`` runs the whole grid (for a GPU).

    .venv/bin/python benchmarks/bench_pair_scoring.py [--threads 1] [--device cuda] [--full]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from reidkit.losses.verification import same_probability
from reidkit.models.mtdnet import MTDNet
from reidkit.retrieval.pair_ranking import pair_score_matrix

RESULTS = Path(__file__).parent / "results" / "pair_scoring.md"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _orders(q: torch.Tensor, g: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    qm, gm = q.flip(-1), g.flip(-1)
    return [(q, g), (g, q), (qm, g), (g, qm), (q, gm), (gm, q), (qm, gm), (gm, qm)]


@torch.inference_mode()
def score_from_pixels(model: MTDNet, queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Baseline: every pair's 8 passes straight from pixels."""
    out = torch.empty(len(queries), len(gallery))
    for i, q in enumerate(queries):
        for j, g in enumerate(gallery):
            orders = _orders(q, g)
            first = model.trunk_features(torch.stack([a for a, _ in orders]))
            second = model.trunk_features(torch.stack([b for _, b in orders]))
            out[i, j] = same_probability(model.verify_logits(first, second)).mean()
    return out


@torch.inference_mode()
def score_trunk_once(model: MTDNet, queries: torch.Tensor, gallery: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """Trunk maps cached per image and mirror image; the whole head (conv3 included) per pass."""
    q, g = model.trunk_features(queries), model.trunk_features(gallery)
    qm, gm = model.trunk_features(queries.flip(-1)), model.trunk_features(gallery.flip(-1))
    qi, gi = torch.meshgrid(torch.arange(len(q)), torch.arange(len(g)), indexing="ij")
    qi, gi = qi.flatten(), gi.flatten()
    scores = []
    for s in range(0, len(qi), batch_size):
        a, b = qi[s:s + batch_size], gi[s:s + batch_size]
        passes = [(q[a], g[b]), (g[b], q[a]), (qm[a], g[b]), (g[b], qm[a]),
                  (q[a], gm[b]), (gm[b], q[a]), (qm[a], gm[b]), (gm[b], qm[a])]
        first = torch.cat([x for x, _ in passes])
        second = torch.cat([y for _, y in passes])
        probs = same_probability(model.verify_logits(first, second)).view(8, -1)
        scores.append(probs.mean(dim=0))
    return torch.cat(scores).view(len(q), len(g)).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=316, help="full-size queries (VIPeR)")
    parser.add_argument("--gallery", type=int, default=316, help="full-size gallery (VIPeR)")
    parser.add_argument("--sub-queries", type=int, default=4, help="queries actually scored")
    parser.add_argument("--sub-gallery", type=int, default=32, help="gallery actually scored")
    parser.add_argument("--pixel-pairs", type=int, default=4,
                        help="pairs scored from pixels for the baseline rate")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per head call")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="score the full grid for real")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MTDNet().eval().to(device)  # paper size: CaffeNet trunk, 227x227
    n_sub_q = args.queries if args.full else args.sub_queries
    n_sub_g = args.gallery if args.full else args.sub_gallery
    gen = torch.Generator().manual_seed(0)
    queries = torch.rand(n_sub_q, 3, 227, 227, generator=gen).to(device)
    gallery = torch.rand(n_sub_g, 3, 227, 227, generator=gen).to(device)
    full_pairs = args.queries * args.gallery
    sub_pairs = n_sub_q * n_sub_g

    def run_ranking() -> None:
        run_ranking.scores = pair_score_matrix(model, queries, gallery, args.batch_size,
                                               progress=False)

    pair_score_matrix(model, queries[:1], gallery[:2], args.batch_size, progress=False)  # warm-up
    # trunk rate: images through the trunk per second (each image runs twice: plain and mirror)
    trunk_batch = queries[:min(len(queries), 16)]
    with torch.inference_mode():
        t_trunk = _timed(lambda: model.trunk_features(trunk_batch), device)
    trunk_rate = len(trunk_batch) / t_trunk
    t_rank = _timed(run_ranking, device)
    # head-only time of the sub-grid: its total minus the trunk passes it made
    head_split = sub_pairs / max(t_rank - 2 * (n_sub_q + n_sub_g) / trunk_rate, 1e-9)
    t_once = _timed(lambda: setattr(run_ranking, "once", score_trunk_once(
        model, queries, gallery, args.batch_size)), device)
    head_once = sub_pairs / max(t_once - 2 * (n_sub_q + n_sub_g) / trunk_rate, 1e-9)
    k = min(args.pixel_pairs, n_sub_g)
    t_pix = _timed(lambda: setattr(run_ranking, "pix", score_from_pixels(
        model, queries[:1], gallery[:k])), device)
    pixel_rate = k / t_pix
    max_diff_once = float((torch.from_numpy(run_ranking.scores) - run_ranking.once).abs().max())
    max_diff_pix = float((torch.from_numpy(run_ranking.scores[:1, :k]) - run_ranking.pix)
                         .abs().max())

    trunk_full = 2 * (args.queries + args.gallery) / trunk_rate
    full_split = trunk_full + full_pairs / head_split
    full_once = trunk_full + full_pairs / head_once
    full_pix = full_pairs / pixel_rate
    label = "measured" if args.full else "extrapolated"
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "## Pair scoring (MTDnet gallery ranking, 8 passes per pair)",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        f"Machine: {device_name}; torch {torch.__version__}, {torch.get_num_threads()} CPU "
        f"threads; load average at the end {load}. Model: CaffeNet MTDnet, 227x227, "
        f"random weights (speed does not depend on them).",
        "",
        f"Scored for real: {n_sub_q} x {n_sub_g} = {sub_pairs} pairs (ranking, trunk once), "
        f"{k} pairs (from pixels). Full size {args.queries} x {args.gallery} = {full_pairs:,} "
        f"pairs; full-size times are **{label}** from the rates below. Head rates exclude the "
        "trunk passes (measured separately, images/s); full times add them back.",
        "",
        "| method | pairs/s | full-size time (s) | speed-up vs from pixels |",
        "|---|---:|---:|---:|",
        f"| from pixels (baseline) | {pixel_rate:.2f} | {full_pix:,.0f} | 1.0x |",
        f"| trunk once | {head_once:.2f} | {full_once:,.0f} | {full_pix / full_once:.1f}x |",
        f"| trunk once + conv3 split (`pair_score_matrix`) | {head_split:.2f} | "
        f"{full_split:,.0f} | {full_pix / full_split:.1f}x |",
        "",
        f"Trunk: {trunk_rate:.1f} images/s. conv3 split vs trunk once: "
        f"{head_split / head_once:.2f}x on the head. End-to-end at full size with "
        f"`pair_score_matrix`: {full_pairs / full_split:.2f} pairs/s ({label}).",
        f"Agreement: max |score difference| {max_diff_once:.1e} (trunk once) and "
        f"{max_diff_pix:.1e} (from pixels) against `pair_score_matrix`.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
