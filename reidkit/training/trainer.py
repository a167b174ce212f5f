"""The training loop for ID + triplet models (Pyramid, PCB-style stripes, global baseline).

Each step follows the dynamic scheduler's decision: which objective to optimise and which sampler
feeds the batch. Every epoch ends with an atomic checkpoint; ``resume=True`` continues from it
with the same next batch, optimiser, learning rate, scheduler EMA and random state. The best epoch
is chosen on a validation split carved from the training identities, never on the test set.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from reidkit.config import Config
from reidkit.data import ImageRecord, ReIDDataset, load_dataset
from reidkit.data.loader import ImageDataset, build_test_loader
from reidkit.data.samplers import BalancedIdentitySampler, RandomBatchSampler
from reidkit.data.transforms import build_transforms
from reidkit.evaluation import compute_distance, evaluate_rank
from reidkit.losses import TripletLoss, TripletResult, id_loss
from reidkit.models import build_model
from reidkit.models.inference import extract_features
from reidkit.models.io import atomic_write, save_model
from reidkit.training.distributed import DistContext
from reidkit.training.dynamic import Decision, DynamicLossScheduler
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


class Trainer:
    """Build everything a recipe describes and run it: ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: Config, *, resume: bool = False, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.out = Path(cfg.train.output_dir)
        device_type = "cuda" if resolve_device(cfg.train.device).type == "cuda" else "cpu"
        self.dist = DistContext.from_env(device_type)
        self.device = resolve_device(cfg.train.device, self.dist.local_rank)
        self._seed_everything(cfg.train.seed)

        self.dataset, self.val = self._load_data()
        self.model = self._build_model()
        self.optimizer = self._build_optimizer()
        self.iters_per_epoch = cfg.train.iters_per_epoch or max(
            1, len(self.dataset.train) // (cfg.sampler.batch_size * self.dist.world_size))
        o = cfg.optim
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.iters_per_epoch, o.warmup_epochs,
                                                   o.warmup_factor, o.milestones, o.gamma))
        d = cfg.dynamic
        self.scheduler = DynamicLossScheduler(alpha=d.alpha, lam=d.lam, delta=d.delta,
                                              combine=d.combine, update=d.update,
                                              fixed_weights=d.fixed_weights)
        self.triplet = TripletLoss(margin=cfg.loss.triplet_margin, soft_margin=cfg.loss.soft_margin,
                                   normalize=cfg.loss.normalize_features)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.streams = self._build_streams()
        self.epoch, self.step, self.best = 0, 0, {"mAP": -1.0, "epoch": -1}
        if resume:
            self._load_state()

    # ----------------------------------------------------------------------------- set-up
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed + self.dist.rank)
        if self.cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _load_data(self) -> tuple[ReIDDataset, tuple[list[ImageRecord], list[ImageRecord]] | None]:
        c = self.cfg.data
        dataset = load_dataset(c.dataset, c.root, **c.options)
        if not c.val_ids:
            return dataset, None
        dataset, val_query, val_gallery = dataset.carve_validation(c.val_ids, self.cfg.train.seed)
        return dataset, (val_query, val_gallery)

    def _build_model(self) -> nn.Module:
        m = self.cfg.model
        model = build_model(m.name, num_classes=self.dataset.num_train_pids, backbone=m.backbone,
                            pretrained=m.pretrained, **m.options).to(self.device)
        if self.dist.enabled:
            if self.cfg.train.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    @property
    def bare_model(self) -> nn.Module:
        return getattr(self.model, "module", self.model)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = self.bare_model.param_groups(o.lr, o.new_lr)
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)

    def _build_streams(self) -> dict[str, BatchStream]:
        c, s, seed = self.cfg.data, self.cfg.sampler, self.cfg.train.seed
        transform = build_transforms(c.height, c.width, train=True, flip_p=c.flip_p, pad=c.pad,
                                     erase_p=c.erase_p)
        train_set = ImageDataset(self.dataset.train, transform)
        pids = [r.pid for r in self.dataset.train]
        dist = {"rank": self.dist.rank, "world_size": self.dist.world_size, "seed": seed}
        samplers = {
            "random": RandomBatchSampler(len(pids), s.batch_size, **dist),
            "balanced": BalancedIdentitySampler(pids, s.num_ids, s.num_instances, **dist),
        }
        pin = self.device.type == "cuda"
        return {name: BatchStream(train_set, sampler, seed=seed, stream_id=i,
                                  num_workers=c.num_workers, pin_memory=pin)
                for i, (name, sampler) in enumerate(samplers.items())}

    # ----------------------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; return the summary also written to ``summary.json``."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        log = MetricsLog(self.out, enabled=self.dist.is_main)
        started = time.perf_counter()
        with self._progress() as progress:
            task = progress.add_task("train", total=self.cfg.train.epochs * self.iters_per_epoch,
                                     completed=self.step, status="")
            while self.epoch < self.cfg.train.epochs:
                self.model.train()
                for _ in range(self.step - self.epoch * self.iters_per_epoch, self.iters_per_epoch):
                    record = self.train_step()
                    log.write(record)
                    if self.step % self.cfg.train.log_every == 0 or self.step == 1:
                        progress.update(task, completed=self.step, status=_status(record))
                self.scheduler_end_epoch()
                self.epoch += 1
                val = self._maybe_validate()
                if val is not None:
                    log.write({"epoch": self.epoch, "step": self.step, **val})
                self._save_checkpoint(val)
            progress.update(task, completed=self.step)
        log.close()
        summary = self._finish(time.perf_counter() - started)
        self.dist.close()
        return summary

    def train_step(self) -> dict[str, Any]:
        """One optimisation step under the scheduler's current decision; returns its log record."""
        decision: Decision = self.scheduler.decision
        images, pids, *_ = next(self.streams[decision.sampler])
        images = images.to(self.device, non_blocking=True)
        pids = pids.to(self.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            out = self.model(images)
            loss_id = id_loss(out.logits, pids, label_smoothing=self.cfg.loss.label_smoothing)
        joint = decision.objective == "joint"
        feats = out.features.float() if joint else out.features.detach().float()
        trip = self._triplet(feats, pids)
        loss = loss_id
        if joint:
            loss = decision.weights["id"] * loss_id
            if trip.num_valid > 0:
                loss = loss + decision.weights["tp"] * trip.loss
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
        # every rank must decide alike: average the ID loss over ranks, and the triplet loss over
        # the ranks whose batch had a valid triplet
        valid = trip.num_valid > 0
        id_sum, tp_sum, tp_count = self.dist.sum(
            [loss_id.item(), trip.loss.item() if valid else 0.0, float(valid)])
        id_value = id_sum / self.dist.world_size
        tp_value = tp_sum / tp_count if tp_count else None
        self.scheduler.update(id_value, tp_value)
        return {"step": self.step, "epoch": self.epoch, "id_loss": id_value,
                "tp_loss": tp_value, "loss": loss.item(),
                "objective": decision.objective, "sampler": decision.sampler,
                "w_id": decision.weights["id"], "w_tp": decision.weights["tp"],
                "lr": lr}

    def _triplet(self, feats: torch.Tensor, pids: torch.Tensor) -> TripletResult:
        if self.cfg.loss.triplet_on == "concat":
            return self.triplet(feats, pids)
        width = getattr(self.bare_model, "feat_dim", feats.shape[1])
        parts = [self.triplet(f, pids) for f in feats.split(width, dim=1)]
        return TripletResult(sum(p.loss for p in parts), min(p.num_valid for p in parts),
                             sum(p.precision for p in parts) / len(parts))

    def scheduler_end_epoch(self) -> None:
        if self.cfg.dynamic.update == "epoch":
            self.scheduler.end_epoch()

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, query: list[ImageRecord], gallery: list[ImageRecord]) -> dict[str, float]:
        """mAP / rank-k of the current model on ``query`` against ``gallery`` (standard protocol)."""
        qf, gf = (self.extract(records) for records in (query, gallery))
        distmat = compute_distance(qf, gf, metric="euclidean")
        result = evaluate_rank(distmat, np.array([r.pid for r in query]),
                               np.array([r.pid for r in gallery]),
                               np.array([r.camid for r in query]),
                               np.array([r.camid for r in gallery]),
                               max_rank=min(50, len(gallery)))
        return {"mAP": float(result.mAP), "rank1": float(result.cmc[0]),
                "rank5": float(result.cmc[min(4, len(result.cmc) - 1)]),
                "mINP": float(result.mINP)}

    def extract(self, records: list[ImageRecord]) -> np.ndarray:
        c = self.cfg.data
        loader = build_test_loader(records, build_transforms(c.height, c.width, train=False),
                                   batch_size=self.cfg.sampler.batch_size, num_workers=c.num_workers)
        return extract_features(self.bare_model, loader, self.device)

    def _maybe_validate(self) -> dict[str, float] | None:
        last = self.epoch == self.cfg.train.epochs
        if self.val is None or not self.dist.is_main:
            return None
        if self.epoch % self.cfg.train.eval_every and not last:
            return None
        metrics = self.evaluate(*self.val)
        return {f"val_{k}": v for k, v in metrics.items()}

    # ----------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, val: dict[str, float] | None) -> None:
        if not self.dist.is_main:
            self.dist.barrier()
            return
        meta = {"epoch": self.epoch, "step": self.step, "dataset": self.cfg.data.dataset,
                "input_size": [self.cfg.data.height, self.cfg.data.width]}
        save_model(self.out / "last.safetensors", self.model, meta)
        if val is not None and val["val_mAP"] > self.best["mAP"]:
            self.best = {"mAP": val["val_mAP"], "epoch": self.epoch}
            save_model(self.out / "best.safetensors", self.model, {**meta, **val})
        state = {
            "config": json.dumps(self.cfg.to_dict()),
            "model": self.bare_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": json.dumps(self.scheduler.state_dict()),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "epoch": self.epoch, "step": self.step, "best": json.dumps(self.best),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
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
        changed = _diff(saved, now)
        if changed:
            raise ResumeError(f"--resume: the recipe differs from the run in {self.out}: "
                              + ", ".join(changed[:6]))
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(json.loads(state["scheduler"]))
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best = json.loads(state["best"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.console.print(f"resumed {self.out} at epoch {self.epoch}, step {self.step}")

    def _finish(self, seconds: float) -> dict[str, Any]:
        summary: dict[str, Any] = {"epochs": self.epoch, "steps": self.step,
                                   "train_seconds": round(seconds, 1)}
        if self.dist.is_main:
            chosen = "best" if self.best["epoch"] >= 0 else "last"
            summary.update(best_epoch=self.best["epoch"], model=str(self.out / f"{chosen}.safetensors"))
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


def _status(record: dict[str, Any]) -> str:
    tp = record["tp_loss"]
    return (f"id {record['id_loss']:.3f} tp {'-' if tp is None else f'{tp:.3f}'} "
            f"{record['objective']}/{record['sampler']}")


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} -> {b!r})"]
