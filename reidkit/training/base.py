"""What every reidkit trainer shares: the epoch loop, logging, checkpoints and exact resume.

A trainer subclass builds its data, model, optimiser and batch streams, then calls
:meth:`TrainerBase._finish_setup`; it supplies ``train_step`` (one optimisation step, returning its
log record) and ``evaluate`` (metrics on a query/gallery split). Every epoch ends with validation
(when due) and an atomic checkpoint; ``resume=True`` continues with the same next batch,
optimiser, learning rate, random state and whatever :meth:`extra_state` adds.

A run folder (``train.output_dir``) holds one run: training into a folder that holds another run
is refused unless resuming (or after :func:`clear_run`). The training state is written before the
model files, so a kill at any moment leaves a state to resume from, and a resume rewrites model
files a kill cut short; it also removes the temporaries of killed writes and the log rows after
the resumed step. Epochs are counted from 1 everywhere: a step row's ``epoch`` is the epoch it
belongs to, a validation row's and a model file's the epoch just completed.
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
from torch import nn

from reidkit.config import Config
from reidkit.data import ImageRecord
from reidkit.data.loader import ImageDataset, Unreadable, UnreadableImagesError, check_records
from reidkit.errors import ReidkitError
from reidkit.models.io import (
    CheckpointError,
    atomic_write,
    read_model_meta,
    remove_stale_temporaries,
    save_model,
)
from reidkit.progress import progress
from reidkit.retrieval.evaluate import evaluate_model, validation_metrics
from reidkit.training.distributed import DistContext
from reidkit.training.streams import BatchStream

STATE_FILE = "train_state.pt"
MODEL_FILES = ("last.safetensors", "best.safetensors")
# every file a run writes into its folder (the folder may hold other files: they are left alone)
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", STATE_FILE, *MODEL_FILES, "tensorboard")
PROTOCOL_FILES = ("protocol.json", "protocol.md")  # a multi-split run: these and split<k>/ runs
_STATE_KEYS = ("config", "model", "optimizer", "lr_schedule", "scaler", "streams", "epoch", "step",
               "best", "rng")


class ResumeError(ReidkitError, ValueError):
    """``--resume`` found no usable training state, or one written by a different recipe."""


class RunFolderError(ReidkitError, ValueError):
    """``train.output_dir`` already holds a run, and neither resuming nor starting over was asked."""


class DeviceError(ReidkitError, ValueError):
    """A device name that torch does not know, or a device this machine does not have."""


class TrainingDivergedError(ReidkitError, FloatingPointError):
    """The loss became NaN or infinite: the learning rate (or another setting) is too large."""


def resolve_device(name: str, local_rank: int = 0, option: str = "train.device") -> torch.device:
    """The torch device ``name`` (auto | cpu | cuda | cuda:N | mps) on this machine.

    ``option`` is how the user set it, for the error message.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{option}={name} is not a device; use auto, cpu, cuda, cuda:N or mps"
                          ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{option}={name} but CUDA is not available on this machine; "
                              f"use {option}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{option}={name} but this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{option}={name} but Apple's MPS is not available; use {option}=cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{option}={name}: reidkit runs on cpu, cuda or mps")
    return device


def run_files(out: str | Path) -> list[Path]:
    """The files and folders reidkit wrote into the run folder ``out`` (one run or a multi-split
    run with ``split<k>/`` folders), without the stale temporaries."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / name for name in (*RUN_FILES, *PROTOCOL_FILES) if (out / name).exists()]
    for split in _split_folders(out):
        found += run_files(split)
    return found


def _split_folders(out: Path) -> list[Path]:
    """The ``split<k>/`` run folders of a multi-split run in ``out``."""
    return sorted(p for p in out.glob("split[0-9]*") if p.name[5:].isdigit() and p.is_dir())


def clear_run(out: str | Path) -> list[Path]:
    """Delete the run in ``out`` (what :func:`run_files` lists, and stale temporaries) so that a
    new run can start there; other files are kept. Returns what was deleted."""
    import shutil

    out = Path(out)
    removed = run_files(out)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for folder in [out, *_split_folders(out)]:
        removed += remove_stale_temporaries(folder, RUN_FILES)
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


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
    mirror_at_test = False
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
        self.history: list[dict[str, Any]] = []  # validation records, one per validated epoch
        self.unreadable: list[Unreadable] = []
        self._resumed = False
        self._prior_seconds = 0.0  # training time of the run before the resumed checkpoint
        self._checkpoint_val: dict[str, float] | None = None
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
        elif run_files(self.out):
            found = ", ".join(p.name for p in run_files(self.out)[:4])
            raise RunFolderError(
                f"{self.out} already holds a training run ({found}); continue it with --resume, "
                "start it over with --force (deletes that run's files), or choose another "
                "train.output_dir")

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

    def evaluate(self, query: list[ImageRecord], gallery: list[ImageRecord]) -> dict[str, float]:
        """mAP, rank-1, rank-5 and mINP of the current model on a query/gallery split, ranked as
        its spec says (``mirror_at_test``: over mirrored images too, as MTDnet's scripts do)."""
        result = evaluate_model(self.saved_model, query, gallery,
                                batch_size=self.cfg.sampler.batch_size,
                                num_workers=self.cfg.data.num_workers, device=self.device,
                                mirror=self.mirror_at_test)
        return validation_metrics(result)

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
    def fit(self, *, strict_images: bool = False) -> dict[str, Any]:
        """Train to ``train.epochs``; return the summary also written to ``summary.json``.

        Unreadable images are found before the first step: they are reported, left out of
        validation and never drawn for training (``strict_images``: refused instead).
        """
        self.dist.barrier()  # every rank has looked at the run folder before the main one writes
        try:
            if self.dist.is_main:
                self._prepare_folder()
            self._check_images(strict_images)
            log = MetricsLog(self.out, enabled=self.dist.is_main,
                             purge_step=self.step + 1 if self._resumed else None)
            try:
                self._loop(log, time.perf_counter())
            finally:
                log.close()
        finally:
            for stream in self.streams.values():
                stream.close()
            self.dist.close()
        return self._finish()

    def _loop(self, log: MetricsLog, started: float) -> None:
        epochs = self.cfg.train.epochs
        with self._progress() as bar:
            task = bar.add_task(self.task_name, completed=self.step, status="",
                                total=epochs * self.iters_per_epoch)
            while self.epoch < epochs:
                self.model_in_training.train()
                for _ in range(self.step - self.epoch * self.iters_per_epoch, self.iters_per_epoch):
                    record = self.train_step()
                    record["epoch"] = self.epoch + 1  # the epoch this step belongs to, from 1
                    log.write(record)
                    if self.step % self.cfg.train.log_every == 0 or self.step == 1:
                        bar.update(task, completed=self.step, status=self.status(record))
                self.end_epoch()
                self.epoch += 1
                val = self._maybe_validate()
                if val is not None:
                    row = {"epoch": self.epoch, "step": self.step, **val}
                    log.write(row)
                    self.history.append(row)
                    self.console.print(f"epoch {self.epoch}/{epochs} validation: "
                                       + _percentages(val), highlight=False)
                self._save_checkpoint(val, self._prior_seconds + time.perf_counter() - started)
            bar.update(task, completed=self.step)
        self._seconds = self._prior_seconds + time.perf_counter() - started

    def _prepare_folder(self) -> None:
        """Create the run folder, remove what killed runs left, record the recipe."""
        self.out.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(self.out, RUN_FILES)
        if stale:
            self.console.print(f"removed {len(stale)} temporary file(s) of interrupted saves "
                               f"from {self.out}")
        if self._resumed:
            _truncate_log(self.out / "metrics.jsonl", self.step)
            if self.step:
                self._complete_model_files()
        atomic_write(self.out / "config.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(self.cfg.to_dict(), indent=2)))

    def _check_images(self, strict: bool) -> None:
        """Find the unreadable training and validation images before the first step."""
        sets = [s.dataset for s in self.streams.values() if isinstance(s.dataset, ImageDataset)]
        val = [r for part in self.val or () for r in part]
        records = [r for d in sets for r in d.records] + val
        _, self.unreadable = check_records(records)
        if not self.unreadable:
            return
        listed = "; ".join(f"{u.path} ({u.reason})" for u in self.unreadable[:10])
        more = f"; and {len(self.unreadable) - 10} more" if len(self.unreadable) > 10 else ""
        if strict:
            raise UnreadableImagesError(f"{len(self.unreadable)} image(s) cannot be read: "
                                        f"{listed}{more}. Remove or replace them, or train without "
                                        "--strict to skip them")
        if self.dist.is_main:
            self.console.print(f"skipping {len(self.unreadable)} unreadable image(s): {listed}{more}",
                               highlight=False, soft_wrap=True)
        bad = {u.path for u in self.unreadable}
        for dataset in sets:
            dataset.failed_paths |= bad  # never drawn: the next readable image stands in
        if self.val is not None:
            self.val = tuple([r for r in part if r.path not in bad] for part in self.val)  # type: ignore[assignment]

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """Backward, step and schedule; returns the learning rate this step used."""
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss.item()} at step {self.step + 1}; lower optim.lr and "
                "optim.new_lr (or add warm-up: optim.warmup_epochs)")
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
    def _save_checkpoint(self, val: dict[str, float] | None, seconds: float) -> None:
        if not self.dist.is_main:
            self.dist.barrier()
            return
        if val is not None and val["val_mAP"] > self.best["mAP"]:
            self.best = {"mAP": val["val_mAP"], "epoch": self.epoch}
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
            "train_seconds": seconds, "history": json.dumps(self.history), "val": json.dumps(val),
            **self.extra_state(),
        }
        # the state first: it holds the weights too, so a kill before the model files are
        # written still resumes, and the resume writes them (_complete_model_files)
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(state, tmp))
        self._write_model_files(val)
        self.dist.barrier()

    def _write_model_files(self, val: dict[str, float] | None) -> None:
        meta = {"epoch": self.epoch, "step": self.step, "dataset": self.cfg.data.dataset}
        save_model(self.out / "last.safetensors", self.saved_model, meta)
        if self.best["epoch"] == self.epoch:
            save_model(self.out / "best.safetensors", self.saved_model, {**meta, **(val or {})})

    def _complete_model_files(self) -> None:
        """Write the model files of the resumed checkpoint when a kill cut them short."""
        def step_of(name: str) -> int | None:
            try:
                return read_model_meta(self.out / name)[1].get("step")
            except CheckpointError:  # missing, or a temporary a kill left half-written
                return None

        best_due = self.best["epoch"] == self.epoch and step_of("best.safetensors") != self.step
        if step_of("last.safetensors") != self.step or best_due:
            self._write_model_files(self._checkpoint_val)

    def _load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            self._resume_without_checkpoint(path)
            return
        state = _read_state(path)
        self._check_recipe(json.loads(state["config"]), path)
        try:
            self.saved_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])
            self.scaler.load_state_dict(state["scaler"])
            for name, stream in self.streams.items():
                stream.load_state_dict(state["streams"][name])
            self.load_extra_state(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ResumeError(f"--resume: the training state {path} does not fit this model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); start "
                              "the run over with --force") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best = json.loads(state["best"])
        self.history = json.loads(state.get("history", "[]"))
        self._checkpoint_val = json.loads(state.get("val", "null"))
        self._prior_seconds = float(state.get("train_seconds", 0.0))
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._resumed = True
        self.console.print(f"resumed {self.out} at epoch {self.epoch}, step {self.step}")

    def _resume_without_checkpoint(self, path: Path) -> None:
        """A run killed before its first checkpoint resumes from step 0; no run at all is an error."""
        recorded = self.out / "config.json"
        if not recorded.is_file():
            raise ResumeError(f"--resume: no training state at {path} and no run in {self.out}; "
                              "start without --resume")
        try:
            saved = json.loads(recorded.read_text())
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            raise ResumeError(f"--resume: {recorded} is damaged and there is no training state at "
                              f"{path}; start the run over with --force")
        self._check_recipe(saved, recorded)
        self._resumed = True
        self.console.print(f"--resume: {self.out} has no checkpoint yet (the run stopped in its "
                           "first epoch); starting it from step 0")

    def _check_recipe(self, saved: dict[str, Any], source: Path) -> None:
        now = self.cfg.to_dict()
        if isinstance(saved.get("train"), dict):
            # extending a finished run is allowed, and so is moving its folder
            for key in ("epochs", "output_dir"):
                saved["train"][key] = now["train"][key]
        changed = config_diff(saved, now)
        if changed:
            raise ResumeError(f"--resume: the recipe differs from the run in {self.out} ({source.name}): "
                              + ", ".join(changed[:6]))

    def _finish(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"epochs": self.epoch, "steps": self.step,
                                   "train_seconds": round(self._seconds, 1)}
        if self.unreadable:
            summary["unreadable_images"] = [u.path for u in self.unreadable]
        if self.dist.is_main:
            chosen = "best" if self.best["epoch"] >= 0 else "last"
            summary.update(best_epoch=self.best["epoch"],
                           model=str(self.out / f"{chosen}.safetensors"))
            best = [r for r in self.history if r["epoch"] == self.best["epoch"]]
            if best:
                summary["best_validation"] = {k: v for k, v in best[-1].items() if k != "step"}
            if self.history:
                summary["validation"] = self.history
            text = json.dumps(summary, indent=2, allow_nan=False)
            atomic_write(self.out / "summary.json", lambda tmp: Path(tmp).write_text(text))
        return summary

    def _progress(self):
        return progress(self.console, disable=not self.dist.is_main)


def _percentages(val: dict[str, float]) -> str:
    names = {"val_mAP": "mAP", "val_rank1": "rank-1", "val_rank5": "rank-5", "val_mINP": "mINP"}
    return ", ".join(f"{names.get(k, k)} {100 * v:.1f}%" for k, v in val.items())


def _read_state(path: Path) -> dict[str, Any]:
    """The training state at ``path``, or a :class:`ResumeError` saying the file is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises many types for a damaged file
        # PyTorch's own message would advise weights_only=False, i.e. running the file's code
        what = ("it is empty" if path.stat().st_size == 0
                else "it is truncated or not a reidkit training state")
        raise ResumeError(f"--resume: cannot read the training state {path}: {what}. Start the run "
                          "over with --force, or restore the file from a copy") from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ResumeError(f"--resume: the training state {path} lacks {', '.join(missing)}; start "
                          "the run over with --force")
    return state


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (those of the resumed checkpoint) and drop the
    rest, which a killed run wrote after it, and a half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


class MetricsLog:
    """Every step's losses, decision and weights as JSON lines (and TensorBoard when installed)."""

    def __init__(self, out: Path, enabled: bool, purge_step: int | None = None):
        # line-buffered: the log can be followed while the run goes on
        self.file = open(out / "metrics.jsonl", "a", buffering=1) if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                # purge_step: a resumed run drops the events the killed run logged after it
                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)
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
