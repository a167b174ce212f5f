"""What every reidkit trainer shares: the epoch loop, logging, checkpoints and exact resume.

A trainer subclass builds its data, model, optimiser and batch streams, then calls
:meth:`TrainerBase._finish_setup`; it supplies ``train_step`` (one optimisation step, returning its
log record) and ``evaluate`` (metrics on a query/gallery split). Every epoch ends with validation
(when due) and an atomic checkpoint; ``resume=True`` continues with the same next batch,
optimiser, learning rate, random state and whatever :meth:`extra_state` adds.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from reidkit.config import Config
from reidkit.data import ImageRecord
from reidkit.models.io import atomic_write, save_model
from reidkit.training.distributed import DistContext
from reidkit.training.streams import BatchStream

STATE_FILE = "train_state.pt"


class ResumeError(ValueError):
    """``--resume`` found no usable training state, or one written by a different recipe."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def lr_factor(step: int, iters_per_epoch: int, warmup_epochs: int, warmup_factor: float,
              milestones: list[int], gamma: float) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then x``gamma`` at each milestone epoch."""
    epoch = step / iters_per_epoch
    warm = 1.0
    if epoch < warmup_epochs:
        warm = warmup_factor + (1 - warmup_factor) * epoch / warmup_epochs
    return warm * gamma ** bisect.bisect_right(milestones, math.floor(epoch))


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} -> {b!r})"]


class TrainerBase(ABC):
    """The loop, logging and checkpointing around a subclass's ``train_step``."""

    task_name = "train"
    streams: dict[str, BatchStream]
    optimizer: torch.optim.Optimizer
    iters_per_epoch: int
    val: tuple[list[ImageRecord], list[ImageRecord]] | None

    def __init__(self, cfg: Config, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.out = Path(cfg.train.output_dir)
        device_type = resolve_device(cfg.train.device).type
        self.dist = DistContext.from_env(device_type)
        self.device = resolve_device(cfg.train.device, self.dist.local_rank)
        self.epoch, self.step, self.best = 0, 0, {"mAP": -1.0, "epoch": -1}
        seed = cfg.train.seed + self.dist.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _finish_setup(self, resume: bool) -> None:
        """Learning-rate schedule and mixed precision; then restore the run when resuming."""
        o = self.cfg.optim
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.iters_per_epoch, o.warmup_epochs,
                                                   o.warmup_factor, o.milestones, o.gamma))
        self.amp = self.cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if resume:
            self._load_state()

    # ----------------------------------------------------------------------------- subclass hooks
    @property
    @abstractmethod
    def saved_model(self) -> nn.Module:
        """The network that model files hold (unwrapped from DDP or a training-only wrapper)."""

    @property
    @abstractmethod
    def model_in_training(self) -> nn.Module:
        """The module switched to train mode at each epoch's start."""

    @abstractmethod
    def train_step(self) -> dict[str, Any]:
        """One optimisation step; returns its log record."""

    @abstractmethod
    def evaluate(self, query: list[ImageRecord], gallery: list[ImageRecord]) -> dict[str, float]:
        """Metrics (with at least ``mAP``) of the current model on a query/gallery split."""

    def extra_state(self) -> dict[str, Any]:
        """More state for the checkpoint (JSON strings or tensors)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (optional hook: nothing by default)."""
        return None

    def end_epoch(self) -> None:
        """Called after each epoch's last step, before validation (optional hook)."""
        return None

    def status(self, record: dict[str, Any]) -> str:
        return f"loss {record['loss']:.3f}"

    # ----------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; return the summary also written to ``summary.json``."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        log = MetricsLog(self.out, enabled=self.dist.is_main)
        started = time.perf_counter()
        with self._progress() as progress:
            task = progress.add_task(self.task_name, completed=self.step, status="",
                                     total=self.cfg.train.epochs * self.iters_per_epoch)
            while self.epoch < self.cfg.train.epochs:
                self.model_in_training.train()
                for _ in range(self.step - self.epoch * self.iters_per_epoch, self.iters_per_epoch):
                    record = self.train_step()
                    log.write(record)
                    if self.step % self.cfg.train.log_every == 0 or self.step == 1:
                        progress.update(task, completed=self.step, status=self.status(record))
                self.end_epoch()
                self.epoch += 1
                val = self._maybe_validate()
                if val is not None:
                    log.write({"epoch": self.epoch, "step": self.step, **val})
                self._save_checkpoint(val)
            progress.update(task, completed=self.step)
        log.close()
        for stream in self.streams.values():
            stream.close()
        summary = self._finish(time.perf_counter() - started)
        self.dist.close()
        return summary

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """Backward, step and schedule; returns the learning rate this step used."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {self.step}; lower optim.lr/optim.new_lr")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_schedule.step()
        self.step += 1
        return lr

    def _maybe_validate(self) -> dict[str, float] | None:
        last = self.epoch == self.cfg.train.epochs
        if self.val is None or not self.dist.is_main:
            return None
        if self.epoch % self.cfg.train.eval_every and not last:
            return None
        return {f"val_{k}": v for k, v in self.evaluate(*self.val).items()}

    # ----------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, val: dict[str, float] | None) -> None:
        if not self.dist.is_main:
            self.dist.barrier()
            return
        meta = {"epoch": self.epoch, "step": self.step, "dataset": self.cfg.data.dataset,
                "input_size": [self.cfg.data.height, self.cfg.data.width]}
        save_model(self.out / "last.safetensors", self.saved_model, meta)
        if val is not None and val["val_mAP"] > self.best["mAP"]:
            self.best = {"mAP": val["val_mAP"], "epoch": self.epoch}
            save_model(self.out / "best.safetensors", self.saved_model, {**meta, **val})
        state = {
            "config": json.dumps(self.cfg.to_dict()),
            "model": self.saved_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "epoch": self.epoch, "step": self.step, "best": json.dumps(self.best),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            **self.extra_state(),
        }
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(state, tmp))
        self.dist.barrier()

    def _load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise ResumeError(f"--resume: no training state at {path}; start without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["config"])
        now = self.cfg.to_dict()
        saved["train"]["epochs"] = now["train"]["epochs"]  # extending a finished run is allowed
        changed = config_diff(saved, now)
        if changed:
            raise ResumeError(f"--resume: the recipe differs from the run in {self.out}: "
                              + ", ".join(changed[:6]))
        self.saved_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best = json.loads(state["best"])
        self.load_extra_state(state)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.console.print(f"resumed {self.out} at epoch {self.epoch}, step {self.step}")

    def _finish(self, seconds: float) -> dict[str, Any]:
        summary: dict[str, Any] = {"epochs": self.epoch, "steps": self.step,
                                   "train_seconds": round(seconds, 1)}
        if self.dist.is_main:
            chosen = "best" if self.best["epoch"] >= 0 else "last"
            summary.update(best_epoch=self.best["epoch"],
                           model=str(self.out / f"{chosen}.safetensors"))
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), console=self.console,
                        disable=not self.dist.is_main)


class MetricsLog:
    """Every step's losses, decision and weights as JSON lines (and TensorBoard when installed)."""

    def __init__(self, out: Path, enabled: bool):
        # line-buffered: the log can be followed while the run goes on
        self.file = open(out / "metrics.jsonl", "a", buffering=1) if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
