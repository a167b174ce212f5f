"""Does training wait for data? Trainer images/s with each input path against the bare model step.

Run:  .venv/bin/python benchmarks/bench_input_path.py                       # CPU, small model
      .venv/bin/python benchmarks/bench_input_path.py --device cuda --backbone resnet50 \
          --height 384 --width 128 --batch 64 --workers 8 --channels-last --amp-dtype bfloat16

Three ways to run the same Pyramid training step (ID loss per branch + one triplet per branch, the
dynamic scheduler, the optimiser), timed over the same number of steps after a warm-up:

- bare: the step on one batch already on the device (no data loading at all): the ceiling;
- loader: ``data.input_path=loader``, PIL decoding and per-image transforms in loader workers;
- cache: ``data.input_path=cache``, images decoded once to uint8 (build time reported apart) and
  augmented in batches on the device.

The ratio of each path to the bare step says how much of the device's time data loading costs.
On CUDA a thread samples ``nvidia-smi`` GPU utilisation during each timed run. Writes
``benchmarks/results/input_path_<device>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.config import load_config  # noqa: E402
from reidkit.data.synthetic import generate  # noqa: E402
from reidkit.training.trainer import Trainer  # noqa: E402

quiet = Console(stderr=True, quiet=True)


class FixedBatch:
    """A stream that hands out one batch forever (the bare step's input)."""

    def __init__(self, batch):
        self.batch, self.dataset = batch, None

    def __next__(self):
        return self.batch

    def close(self):
        return None


class GpuUtilisation:
    """Mean ``nvidia-smi`` utilisation while the context is open (None without a GPU)."""

    def __enter__(self):
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5, check=True).stdout
                self.samples.append(float(out.split()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def trainer_for(args, root: Path, out: Path, input_path: str) -> Trainer:
    return Trainer(load_config("demo_cpu", [
        f"data.root={root}", f"train.output_dir={out}", f"model.backbone={args.backbone}",
        f"data.height={args.height}", f"data.width={args.width}", f"data.num_workers={args.workers}",
        f"data.input_path={input_path}", f"data.cache_dir={out / 'cache'}", "data.val_ids=0",
        f"sampler.batch_size={args.batch}", f"sampler.num_ids={args.batch // 4}",
        "sampler.num_instances=4", "data.pad=10", "data.erase_p=0.5", "data.flip_p=0.5",
        f"train.device={args.device}", f"train.channels_last={str(args.channels_last).lower()}",
        f"train.amp_dtype={args.amp_dtype}", "dynamic.combine=fixed"]), console=quiet)


def timed(trainer: Trainer, steps: int, warmup: int, device: torch.device) -> tuple[float, float | None]:
    for _ in range(warmup):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    with GpuUtilisation() as gpu:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return steps * trainer.cfg.sampler.batch_size / seconds, gpu.mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--preset", default="demo", help="synthetic preset (tiny: a dry run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(root, preset=args.preset, seed=5)
        rows = []
        bare = trainer_for(args, root, Path(tmp) / "bare", "loader")
        batch = next(bare.streams["balanced"])
        bare.streams = {name: FixedBatch(batch) for name in bare.streams}
        rows.append(("bare step (one batch on the device)",
                     *timed(bare, args.steps, args.warmup, device), None))
        loader = trainer_for(args, root, Path(tmp) / "loader", "loader")
        rows.append((f"loader ({args.workers} workers)",
                     *timed(loader, args.steps, args.warmup, device), None))
        for s in loader.streams.values():
            s.close()
        cache = trainer_for(args, root, Path(tmp) / "cache", "cache")
        start = time.perf_counter()
        cache.streams["balanced"].cache.array  # noqa: B018  (decodes every image once)
        build = time.perf_counter() - start
        rows.append(("cache (batched augmentation on the device)",
                     *timed(cache, args.steps, args.warmup, device), build))
        images = len(cache.dataset.train)
    base = rows[0][1]
    load = os.getloadavg()
    lines = [f"## Training input path ({args.device})", "",
             f"Command: `.venv/bin/python benchmarks/bench_input_path.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), "
             f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
             f"load average {load[0]:.1f} at the end.  ",
             f"Pyramid on {args.backbone} at {args.height}x{args.width}, batch {args.batch} "
             f"({args.batch // 4} ids x 4), flip 0.5 + pad 10 + erasing 0.5, synthetic {args.preset} set "
             f"({images} training images), {args.steps} timed steps after {args.warmup} warm-up "
             f"steps; channels_last {args.channels_last}, autocast {args.amp_dtype} on CUDA.", "",
             "| input path | images/s | / bare step | GPU utilisation | cache build |",
             "|---|---|---|---|---|"]
    for name, speed, gpu, build in rows:
        lines.append(f"| {name} | {speed:.1f} | {speed / base:.2f} | "
                     f"{'-' if gpu is None else f'{gpu:.0f} %'} | "
                     f"{'-' if build is None else f'{build:.1f} s ({images} images)'} |")
    text = "\n".join(lines) + "\n"
    out = args.out or ROOT / "benchmarks" / "results" / f"input_path_{device.type}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
