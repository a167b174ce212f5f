"""Pyramid ablation on synthetic pedestrians: part pyramid vs. stripes vs. global, dynamic vs. fixed.

Run: .venv/bin/python benchmarks/bench_pyramid_ablation.py [--epochs 5] [--iters-per-epoch 10]
     [--seeds 0] [--threads 1] [--work /tmp/reidkit-ablation]

Every run trains the ``demo_cpu`` recipe (ResNet-18 trunk from scratch, Adam) with the same
budget (``--epochs`` x ``--iters-per-epoch`` steps), seed and validation split, changing one
thing at a time, and evaluates the *final* model on the synthetic test query/gallery
(Market-1501 protocol). The demo preset is generated twice, with and without the box
misalignment (vertical and scale jitter; occlusion stays on in both); an existing folder with the
same parameters is reused. The recipe file is copied into the work folder once at the start, so
every run uses the same recipe even if the shipped one changes meanwhile. Groups:

- models under misalignment (``dynamic.combine=focal-normalized``): global baseline, one-level stripes
  (PCB-style), full pyramid;
- dynamic schemes (pyramid, misaligned): ``fixed`` weights 1/1, ``sum`` (the released code),
  ``focal`` (the paper), ``focal-normalized``;
- the three models on the aligned data (``focal-normalized``).

The pyramid + focal-normalized + misaligned run belongs to the first two groups and runs once.
The table adds, from each run's ``metrics.jsonl``, the share of steps that optimised the joint
objective and the mean ID / triplet weights over those steps.
Writes benchmarks/results/pyramid.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.config import load_config, resolve_recipe  # noqa: E402
from reidkit.data.synthetic import generate  # noqa: E402
from reidkit.evaluation import compute_distance, evaluate_rank  # noqa: E402
from reidkit.training.trainer import Trainer  # noqa: E402

RECIPE = "demo_cpu"


@dataclass(frozen=True)
class Run:
    name: str
    group: str
    data: str  # "misaligned" | "aligned"
    overrides: tuple[str, ...]


FN = "dynamic.combine=focal-normalized"
# the recipe's model.options are the Pyramid's; the baseline takes only last_stride of them
BASELINE = ("model.name=baseline", "model.options={last_stride: 1}", FN)
RUNS = (
    Run("baseline", "models, misaligned", "misaligned", BASELINE),
    Run("stripes", "models, misaligned", "misaligned", ("model.name=stripes", FN)),
    Run("pyramid", "models, misaligned", "misaligned", ("model.name=pyramid", FN)),
    Run("pyramid fixed 1/1", "dynamic, misaligned", "misaligned",
        ("model.name=pyramid", "dynamic.combine=fixed")),
    Run("pyramid sum", "dynamic, misaligned", "misaligned",
        ("model.name=pyramid", "dynamic.combine=sum")),
    Run("pyramid focal", "dynamic, misaligned", "misaligned",
        ("model.name=pyramid", "dynamic.combine=focal")),
    Run("baseline", "models, aligned", "aligned", BASELINE),
    Run("stripes", "models, aligned", "aligned", ("model.name=stripes", FN)),
    Run("pyramid", "models, aligned", "aligned", ("model.name=pyramid", FN)),
)


def ensure_data(folder: Path, misalign: bool, seed: int) -> Path:
    """The demo preset in ``folder``, generated unless a copy with the same parameters is there."""
    meta = folder / "meta.json"
    if meta.is_file():
        params = json.loads(meta.read_text())["params"]
        if params["misalign"] == misalign and params["seed"] == seed:
            return folder
        raise SystemExit(f"{folder} holds synthetic data with other parameters; delete it or "
                         "pass another --work folder")
    print(f"generating the demo preset (misalign={misalign}) into {folder} ...", flush=True)
    generate(folder, preset="demo", misalign=misalign, seed=seed, workers=os.cpu_count() or 1)
    return folder


def dynamic_stats(metrics: Path) -> dict[str, float]:
    """Share of joint steps and mean joint weights from a run's step records."""
    steps = [r for r in map(json.loads, metrics.read_text().splitlines()) if "objective" in r]
    joint = [r for r in steps if r["objective"] == "joint"]
    mean = (lambda key: statistics.fmean(r[key] for r in joint)) if joint else (lambda key: float("nan"))
    return {"joint": len(joint) / len(steps), "w_id": mean("w_id"), "w_tp": mean("w_tp"),
            "final_id": statistics.fmean(r["id_loss"] for r in steps[-10:]),
            "final_tp": statistics.fmean(r["tp_loss"] for r in steps[-10:]
                                         if r["tp_loss"] is not None)}


def train_and_test(run: Run, recipe: Path, data_root: Path, out: Path, args: argparse.Namespace,
                   seed: int) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)  # metrics.jsonl appends; every run starts clean
    overrides = [
        f"data.root={data_root}", f"train.output_dir={out}", f"train.seed={seed}",
        f"train.epochs={args.epochs}", f"train.iters_per_epoch={args.iters_per_epoch}",
        f"train.eval_every={args.epochs}", f"data.val_ids={args.val_ids}", "train.device=cpu",
        *run.overrides,
    ]
    trainer = Trainer(load_config(recipe, overrides), console=Console(quiet=True))
    summary = trainer.fit()
    started = time.perf_counter()
    test = trainer.dataset
    qf, gf = trainer.extract(test.query), trainer.extract(test.gallery)
    result = evaluate_rank(compute_distance(qf, gf, metric="euclidean"),
                           np.array([r.pid for r in test.query]), np.array([r.pid for r in test.gallery]),
                           np.array([r.camid for r in test.query]),
                           np.array([r.camid for r in test.gallery]))
    row = {"mAP": result.mAP, "rank1": result.cmc[0], "rank5": result.cmc[4],
           "train_s": summary["train_seconds"], "test_s": time.perf_counter() - started,
           "steps": summary["steps"], **dynamic_stats(out / "metrics.jsonl")}
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    row["val_mAP"] = next((r["val_mAP"] for r in reversed(val) if "val_mAP" in r), float("nan"))
    return row


def combine_of(run: Run) -> str:
    return next(o.split("=", 1)[1] for o in run.overrides if o.startswith("dynamic.combine="))


def fmt(x: float, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if x != x else f"{scale * x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iters-per-epoch", type=int, default=10)
    parser.add_argument("--val-ids", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is several times faster than 2 on a loaded machine")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reidkit-ablation"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pyramid.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()

    roots = {name: ensure_data(args.work / name, misalign=name == "misaligned", seed=0)
             for name in ("misaligned", "aligned")}
    recipe = args.work / f"{RECIPE}.yaml"
    shutil.copyfile(resolve_recipe(RECIPE), recipe)
    cfg = load_config(recipe)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for seed in args.seeds:
        for run in RUNS:
            key = (run.group, run.name)
            print(f"[{time.perf_counter() - started:6.0f} s] {run.group} / {run.name} / seed {seed}",
                  flush=True)
            row = train_and_test(run, recipe, roots[run.data], args.work / "runs" / f"{run.data}-"
                                 f"{run.name.replace(' ', '-').replace('/', '-')}-s{seed}", args, seed)
            results.setdefault(key, []).append(row)
            # the finished trainer's loader workers must be shut down here, not garbage-collected
            # inside the next run's forked workers
            gc.collect()
            print(f"    mAP {100 * row['mAP']:.1f} rank-1 {100 * row['rank1']:.1f} joint "
                  f"{row['joint']:.2f} train {row['train_s']:.0f} s", flush=True)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()

    def mean(key: tuple[str, str], field: str) -> float:
        return statistics.fmean(r[field] for r in results[key])

    def spread(key: tuple[str, str], field: str) -> str:
        values = [100 * r[field] for r in results[key]]
        return f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""

    lines = ["| group | run | combine | mAP | rank-1 | rank-5 | val mAP | joint steps | "
             "mean w_id / w_tp (joint) | last ID / triplet loss | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = list(RUNS)
    order.insert(4, Run("pyramid focal-normalized (= pyramid above)", "dynamic, misaligned",
                        "misaligned", ("model.name=pyramid", FN)))
    for run in order:
        key = (run.group, run.name)
        if key not in results:
            key = ("models, misaligned", "pyramid")
        lines.append(
            f"| {run.group} | {run.name} | {combine_of(run)} | {fmt(mean(key, 'mAP'))}"
            f"{spread(key, 'mAP')} | {fmt(mean(key, 'rank1'))}{spread(key, 'rank1')} | "
            f"{fmt(mean(key, 'rank5'))} | {fmt(mean(key, 'val_mAP'))} | "
            f"{fmt(mean(key, 'joint'), 100, 0)}% | "
            f"{mean(key, 'w_id'):.3g} / {mean(key, 'w_tp'):.3g} | "
            f"{mean(key, 'final_id'):.2f} / {mean(key, 'final_tp'):.2f} | "
            f"{mean(key, 'train_s'):.0f} |")
        print(lines[-1])

    seeds = " ".join(map(str, args.seeds))
    c, o, s = cfg.data, cfg.optim, cfg.sampler
    command = (f".venv/bin/python benchmarks/bench_pyramid_ablation.py --epochs {args.epochs} "
               f"--iters-per-epoch {args.iters_per_epoch} --val-ids {args.val_ids} --seeds {seeds} "
               f"--threads {args.threads}")
    load = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    markdown = "\n".join([
        "## Pyramid ablation on synthetic pedestrians (CPU, short budget)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, Python "
        f"{platform.python_version()}; load average {load(load_before)} before, "
        f"{load(load_after)} after; whole ablation {wall / 60:.1f} min wall.  ",
        f"Budget per run: recipe `{RECIPE}` ({cfg.model.backbone} from scratch, input "
        f"{c.height}x{c.width}, {o.name} lr {o.lr:g}, warm-up {o.warmup_epochs} epoch, lr x{o.gamma:g} "
        f"at epochs {o.milestones}, batch {s.batch_size} = {s.num_ids} ids x {s.num_instances}), "
        f"{args.epochs} epochs x {args.iters_per_epoch} iterations = "
        f"{args.epochs * args.iters_per_epoch} steps "
        f"({args.epochs * args.iters_per_epoch * s.batch_size} images), seed(s) {seeds}, "
        f"{args.val_ids} training ids held out for validation. "
        "Test: the *final* model on the demo preset's test split (100 ids, Market-1501 protocol, "
        "euclidean). Misaligned and aligned data differ only in the box jitter.  ",
        ("Mean ± std over seeds. " if len(args.seeds) > 1 else
         "One seed: differences of a few points are within run-to-run noise. ") +
        "'joint steps': share of steps that optimised ID + triplet (the others: ID alone on "
        "random batches); weights are the mean coefficients of those steps.",
        "",
        *lines,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
