"""MTDnet on two synthetic domains: does multi-task beat one task, does cross-domain help?

Source domain "a" (more identities) and target domain "b" (few identities, other camera styles).
Compared on the target's test identities, single-shot (one query and one gallery image per id):
target-only, pooled (a + b in one training set), fine-tuned from the source model, and the
cross-domain architecture (fine-tune + frozen source + contrastive loss). On the source's test
identities: MTDnet (both tasks, ranked by pair scores) vs rank-only (``rnk``) vs
verification-only (``cls``). Every run has the same step budget, sized for a shared 2-core CPU.

    .venv/bin/python benchmarks/bench_mtdnet.py            # writes benchmarks/results/mtdnet.md
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from reidkit.config import load_config
from reidkit.data import ImageRecord, ReIDDataset, load_dataset
from reidkit.data.synthetic import generate
from reidkit.training.mtdnet_trainer import MTDNetTrainer, load_mtdnet
from reidkit.training.protocols import evaluate_split

SIZE = (80, 67)  # near the generator's 2:1 crops; CaffeNet's trunk needs >= 67 pixels a side
SOURCE_STEPS, TARGET_STEPS, TRIPLETS = 300, 150, 16
FC_WIDTH = 512  # fc6/fc7 width: the paper's 4096 stay at chance within a CPU budget
RESULTS = Path(__file__).parent / "results" / "mtdnet.md"
quiet = Console(stderr=True, quiet=True)


def make_data(base: Path) -> tuple[Path, Path, Path]:
    a, b, pooled = base / "a", base / "b", base / "pooled"
    generate(a, preset="tiny", num_train_ids=60, num_test_ids=24, images_per_id=6, num_cams=4,
             num_distractors=0, num_junk=0, domain="a", seed=11)
    generate(b, preset="tiny", num_train_ids=12, num_test_ids=24, images_per_id=6, num_cams=4,
             num_distractors=0, num_junk=0, domain="b", seed=12)
    # pooled: a's and b's training images in one Market-style folder, b's ids and cams offset
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (pooled / sub).mkdir(parents=True)
    for domain, pid_off, cam_off in ((a, 0, 0), (b, 5000, 10)):
        for f in (domain / "bounding_box_train").iterdir():
            pid, rest = f.name.split("_", 1)
            cam = int(rest[1:rest.index("s")])
            name = f"{int(pid) + pid_off:04d}_c{cam + cam_off}{rest[rest.index('s'):]}"
            os.symlink(f, pooled / "bounding_box_train" / name)
    for sub in ("query", "bounding_box_test"):
        for f in (b / sub).iterdir():
            os.symlink(f, pooled / sub / f.name)
    return a, b, pooled


def single_shot(root: Path) -> ReIDDataset:
    """One query (first camera) and one gallery image (another camera) per test identity."""
    full = load_dataset("market1501", root)
    query: dict[int, ImageRecord] = {}
    for r in full.query + full.gallery:
        query.setdefault(r.pid, r)
    gallery: dict[int, ImageRecord] = {}
    for r in full.query + full.gallery:
        if r.camid != query[r.pid].camid:
            gallery.setdefault(r.pid, r)
    pids = sorted(set(query) & set(gallery))
    return ReIDDataset("synthetic", [], [query[p] for p in pids], [gallery[p] for p in pids])


def train(root: Path, out: Path, steps: int, *extra: str) -> tuple[str, float]:
    cfg = load_config("mtdnet_synth_cpu", [
        f"data.root={root}", f"train.output_dir={out}", f"data.height={SIZE[0]}",
        f"data.width={SIZE[1]}", "data.val_ids=0", "data.num_workers=0", "train.device=cpu",
        f"mtdnet.triplets_per_batch={TRIPLETS}", "train.epochs=1",
        f"model.options.fc_width={FC_WIDTH}",
        f"train.iters_per_epoch={steps}", *extra])
    start = time.perf_counter()
    summary = MTDNetTrainer(cfg, console=quiet).fit()
    return summary["model"], time.perf_counter() - start


def evaluate(model_path: str, test: ReIDDataset, ranks_by: str | None = None) -> dict[str, float]:
    model = load_mtdnet(model_path)
    if ranks_by == "embedding":  # MTDtrp: an MTDnet ranked by its ranking embedding
        model.variant = "trp"
    result = evaluate_split(model, test, batch_size=32)
    return {f"rank{r}": v for r, v in result.cmc.items()} | {"mAP": result.mAP}


def main() -> None:
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        a, b, pooled = make_data(base)
        test_a, test_b = single_shot(a), single_shot(b)
        rows: list[tuple[str, str, dict[str, float], float]] = []

        src, t = train(a, base / "src", SOURCE_STEPS)
        rows.append(("source a", "MTDnet (mtd, pair scores)", evaluate(src, test_a), t))
        rows.append(("source a", "MTDtrp (same model, embedding)",
                     evaluate(src, test_a, "embedding"), 0.0))
        for variant, label in (("rnk", "rank only (rnk)"), ("cls", "verification only (cls)")):
            path, t = train(a, base / variant, SOURCE_STEPS, f"model.options.variant={variant}")
            rows.append(("source a", label, evaluate(path, test_a), t))

        path, t = train(b, base / "tgt", TARGET_STEPS)
        rows.append(("target b", "target only", evaluate(path, test_b), t))
        path, t = train(pooled, base / "pooled", TARGET_STEPS)
        rows.append(("target b", "pooled a+b", evaluate(path, test_b), t))
        path, t = train(b, base / "ft", TARGET_STEPS, f"mtdnet.init_checkpoint={src}")
        rows.append(("target b", "fine-tuned from a", evaluate(path, test_b), t))
        path, t = train(b, base / "xd", TARGET_STEPS, f"mtdnet.init_checkpoint={src}",
                        "mtdnet.cross_domain=true", "mtdnet.source_dataset=market1501",
                        f"mtdnet.source_root={a}")
        rows.append(("target b", "cross-domain (fine-tune + contrastive)",
                     evaluate(path, test_b), t))
        rows.append(("target b", "source model, no target training", evaluate(src, test_b), 0.0))
    total = time.perf_counter() - started
    write(rows, total, len(test_a.query), len(test_b.query))


def write(rows: list, total: float, num_a: int, num_b: int) -> None:
    head = "| test set | training | rank-1 | rank-5 | rank-10 | rank-20 | mAP | train s |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for domain, label, m, seconds in rows:
        cells = [f"{100 * m[k]:.1f}" for k in ("rank1", "rank5", "rank10", "rank20", "mAP")]
        lines.append(f"| {domain} | {label} | {' | '.join(cells)} | {seconds:.0f} |")
    by = {(d, lab): m for d, lab, m, _ in rows}
    mtd = by["source a", "MTDnet (mtd, pair scores)"]["rank1"]
    single = max(by["source a", "rank only (rnk)"]["rank1"],
                 by["source a", "verification only (cls)"]["rank1"])
    target_only = by["target b", "target only"]["rank1"]
    cross = by["target b", "cross-domain (fine-tune + contrastive)"]["rank1"]
    text = f"""# MTDnet on synthetic data (CPU)

Command: `.venv/bin/python benchmarks/bench_mtdnet.py`
Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, Python
{sys.version.split()[0]}, torch {torch.__version__}; total wall time {total / 60:.1f} min.

Setup: synthetic domain "a" (60 training ids, 4 cameras) as source, domain "b" (12 training ids,
other camera styles) as target; CaffeNet-trunk MTDnet (fc6/fc7 {FC_WIDTH} wide) from scratch at
{SIZE[0]}x{SIZE[1]}, Adam
1e-4, {TRIPLETS} cross-camera triplets per step, {SOURCE_STEPS} steps on the source and
{TARGET_STEPS} on the target per run. Test: single-shot, one query and one gallery image (another
camera) per test identity ({num_a} ids on a, {num_b} on b; chance rank-1 is
{100 / num_b:.1f}%). Single run, single seed: differences of a few points are noise at this size.

{chr(10).join(lines)}

Paper claims, as measured here (rank-1):
- multi-task vs the better single task on source a: {100 * mtd:.1f}% vs {100 * single:.1f}%
  ({'multi-task ahead' if mtd > single else 'multi-task not ahead'}).
- cross-domain vs target-only on target b: {100 * cross:.1f}% vs {100 * target_only:.1f}%
  ({'cross-domain ahead' if cross > target_only else 'cross-domain not ahead'}).

Budget note: the step counts are what a shared 2-core CPU allows in ~15 minutes; the models are far
from converged, so this tests the plumbing and the direction of the effects, not the paper's numbers.
"""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
