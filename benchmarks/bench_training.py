"""Training throughput: reidkit's Trainer step vs. a bare PyTorch loop on the same model and batches.

Run: .venv/bin/python benchmarks/bench_training.py [--steps 8] [--repeats 3] [--threads 1]
     [--work /tmp/reidkit-bench-training]

A Trainer is built from the ``demo_cpu`` recipe (Pyramid, ResNet-18 trunk, 128x64, batch 32,
Adam) on the synthetic demo data, with ``dynamic.combine=fixed`` so that every step optimises the
joint objective (ID loss of the 21 branches + batch-hard triplet, weights 1/1) on
identity-balanced batches, exactly what the bare loop computes. ``--steps`` batches are drawn
from the trainer's balanced stream beforehand (decoded and augmented, held in memory). Variants,
each on its own identical copy of the initial model and optimiser:

- bare loop: forward, ID + triplet loss, zero_grad, backward, optimiser step on the in-memory
  batches;
- trainer, in-memory batches: ``Trainer.train_step()`` plus the per-step metrics-log write that
  ``fit()`` does, with the trainer's streams replaced by the same in-memory batches (the
  trainer's own overhead: scheduler, LR schedule, checks, logging);
- trainer, real pipeline: the same, fed by its loader workers, which read, decode and augment the
  JPEGs while the main process computes (on a 2-core machine they compete with it).

Blocks of ``--steps`` steps run interleaved (the order rotating each repeat) after one warm-up
block each; the median block time gives images/s. Writes benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.config import load_config  # noqa: E402
from reidkit.data.synthetic import generate  # noqa: E402
from reidkit.losses import TripletLoss, id_loss  # noqa: E402
from reidkit.training.base import MetricsLog  # noqa: E402
from reidkit.training.trainer import Trainer  # noqa: E402

BARE = "bare loop, in-memory batches"
TRAINER_MEM = "Trainer.train_step, in-memory batches"
TRAINER_REAL = "Trainer.train_step, real data pipeline (loader workers)"


class Replay:
    """An endless stream over fixed batches, standing in for a trainer's BatchStream."""

    def __init__(self, batches: list[Any]):
        self._cycle: Iterator[Any] = itertools.cycle(batches)

    def __next__(self) -> Any:
        return next(self._cycle)


def build_trainer(data_root: Path, out: Path, seed: int) -> Trainer:
    cfg = load_config("demo_cpu", [f"data.root={data_root}", f"train.output_dir={out}",
                                   f"train.seed={seed}", "train.device=cpu",
                                   "dynamic.combine=fixed", "loss.triplet_on=concat",
                                   "data.val_ids=0"])
    return Trainer(cfg, console=Console(quiet=True))


def bare_step_fn(trainer: Trainer, batches: list[Any]) -> Callable[[], None]:
    """One bare optimisation step on a private copy of the trainer's initial model."""
    model = copy.deepcopy(trainer.bare_model).train()
    o = trainer.cfg.optim
    optimizer = torch.optim.Adam(model.param_groups(o.lr, o.new_lr), lr=o.lr,
                                 weight_decay=o.weight_decay)
    triplet = TripletLoss(margin=trainer.cfg.loss.triplet_margin)
    replay = Replay(batches)

    def step() -> None:
        images, pids, *_ = next(replay)
        out = model(images)
        loss = id_loss(out.logits, pids) + triplet(out.features, pids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def trainer_step_fn(trainer: Trainer, log: MetricsLog,
                    streams: dict[str, Any]) -> Callable[[], None]:
    trainer.streams = streams

    def step() -> None:
        log.write(trainer.train_step())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is several times faster than 2 on a loaded machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/reidkit-bench-training"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/training.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    data_root = args.work / "data"
    if not (data_root / "meta.json").is_file():
        print(f"generating the demo preset into {data_root} ...", flush=True)
        generate(data_root, preset="demo", seed=args.seed, workers=os.cpu_count() or 1)
    # three trainers from one seed: identical initial models and optimisers
    trainers = {name: build_trainer(data_root, args.work / f"run-{i}", args.seed)
                for i, name in enumerate((BARE, TRAINER_MEM, TRAINER_REAL))}
    real_streams = trainers[TRAINER_REAL].streams
    batches = [next(trainers[BARE].streams["balanced"]) for _ in range(args.steps)]
    replay_streams = {"balanced": Replay(batches), "random": Replay(batches)}
    logs = {}
    for name, t in trainers.items():
        t.model.train()
        t.out.mkdir(parents=True, exist_ok=True)
        logs[name] = MetricsLog(t.out, enabled=name != BARE)
    steps = {
        BARE: bare_step_fn(trainers[BARE], batches),
        TRAINER_MEM: trainer_step_fn(trainers[TRAINER_MEM], logs[TRAINER_MEM], replay_streams),
        TRAINER_REAL: trainer_step_fn(trainers[TRAINER_REAL], logs[TRAINER_REAL], real_streams),
    }

    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeats + 1):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            if round_:  # round 0 warms up allocators and starts the loader workers
                times[name].append(time.perf_counter() - start)
            print(f"round {round_} {name}: {time.perf_counter() - start:.1f} s", flush=True)
    for log in logs.values():
        log.close()
    load_after = os.getloadavg()

    cfg = trainers[BARE].cfg
    batch = cfg.sampler.batch_size
    speed = {name: batch * args.steps / statistics.median(t) for name, t in times.items()}
    rows = [f"| {name} | {statistics.median(times[name]) / args.steps:.2f} | {speed[name]:.1f} | "
            f"{speed[name] / speed[BARE]:.3f} | {', '.join(f'{t:.1f}' for t in times[name])} |"
            for name in names]
    load = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    command = (f".venv/bin/python benchmarks/bench_training.py --steps {args.steps} "
               f"--repeats {args.repeats} --threads {args.threads}")
    markdown = "\n".join([
        "## Training throughput: Trainer vs. a bare PyTorch loop",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"{args.threads} torch thread(s), {cfg.data.num_workers} loader "
        f"workers, torch {torch.__version__}, Python {platform.python_version()}; load average "
        f"{load(load_before)} before, {load(load_after)} after.  ",
        f"Model: recipe `demo_cpu` ({cfg.model.name}, {cfg.model.backbone} from scratch), batch "
        f"{batch} ({cfg.sampler.num_ids} ids x {cfg.sampler.num_instances}) of "
        f"{cfg.data.height}x{cfg.data.width} images, `dynamic.combine=fixed` (every step: ID + triplet, "
        f"weights 1/1, balanced batches). Blocks of {args.steps} steps, {args.repeats} interleaved "
        "repeats after a warm-up block, median block time.",
        "",
        "| variant | s / step | images / s | ratio to bare loop | block times (s) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Trainer overhead alone (same in-memory batches): ratio {speed[TRAINER_MEM] / speed[BARE]:.3f}. "
        f"With its real data pipeline: {speed[TRAINER_REAL] / speed[BARE]:.3f}; this ratio also "
        "includes reading, decoding and augmenting the images in the loader workers, which the "
        "bare loop gets for free (its batches were prepared beforehand). Goal: >= 0.95.",
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
