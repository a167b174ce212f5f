"""The training loop for ID + triplet models (Pyramid, PCB-style stripes, global baseline).

Each step follows the dynamic scheduler's decision: which objective to optimise and which sampler
feeds the batch. The loop, checkpoints and exact resume are :class:`TrainerBase`'s; the best epoch
is chosen on a validation split carved from the training identities, never on the test set.
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from reidkit.config import IDTripletConfig
from reidkit.data import ImageRecord, ReIDDataset, load_dataset
from reidkit.data.cache import BatchAugment, ImageCache
from reidkit.data.loader import ImageDataset
from reidkit.data.samplers import BalancedIdentitySampler, RandomBatchSampler
from reidkit.losses import TripletLoss, TripletResult, id_loss
from reidkit.models import build_model
from reidkit.models.io import CheckpointError, read_model_meta
from reidkit.training.base import TrainerBase
from reidkit.training.dynamic import Decision, DynamicLossScheduler
from reidkit.training.streams import BatchStream, CachedBatchStream


class Trainer(TrainerBase):
    """Build everything a recipe describes and run it: ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: IDTripletConfig, *, resume: bool = False,
                 console: Console | None = None):
        if not isinstance(cfg, IDTripletConfig):
            raise TypeError(f"Trainer trains Pyramid, stripes and baseline recipes, got one for "
                            f"{cfg.model.name!r}; use reidkit.training.build_trainer")
        super().__init__(cfg, console)
        self.dataset, self.val = self._load_data()
        self.model = self._build_model()
        # the compiled forward shares the model's parameters; checkpoints keep the plain module
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        self.optimizer = self._build_optimizer()
        self.iters_per_epoch = cfg.train.iters_per_epoch or max(
            1, len(self.dataset.train) // (cfg.sampler.batch_size * self.dist.world_size))
        d = cfg.dynamic
        self.scheduler = DynamicLossScheduler(alpha=d.alpha, lam=d.lam, delta=d.delta,
                                              combine=d.combine, update=d.update,
                                              fixed_weights=d.fixed_weights, sampler=d.sampler)
        self.triplet = TripletLoss(margin=cfg.loss.triplet_margin, soft_margin=cfg.loss.soft_margin,
                                   normalize=cfg.loss.normalize_features)
        self.streams = self._build_streams()
        self._finish_setup(resume)

    @property
    def saved_model(self) -> nn.Module:
        ddp = isinstance(self.model, nn.parallel.DistributedDataParallel)
        return self.model.module if ddp else self.model

    bare_model = saved_model

    @property
    def model_in_training(self) -> nn.Module:
        return self.model

    def extra_state(self) -> dict[str, Any]:
        return {"scheduler": json.dumps(self.scheduler.state_dict())}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(json.loads(state["scheduler"]))

    def end_epoch(self) -> None:
        if self.cfg.dynamic.update == "epoch":
            self.scheduler.end_epoch()

    def status(self, record: dict[str, Any]) -> str:
        tp = record["tp_loss"]
        return (f"id {record['id_loss']:.3f} tp {'-' if tp is None else f'{tp:.3f}'} "
                f"{record['objective']}/{record['sampler']}")

    # ----------------------------------------------------------------------------- set-up
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
        model.spec = model.spec.trained_at((self.cfg.data.height, self.cfg.data.width),
                                           self.cfg.data.interpolation)
        if m.init_checkpoint:
            self._init_from(model, m.init_checkpoint)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled:
            if self.cfg.train.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _init_from(self, model: nn.Module, path: str) -> None:
        """Copy the weights of the model file ``path`` whose names and shapes match ``model``'s."""
        read_model_meta(path, expect={"name": self.cfg.model.name})
        state = load_file(str(path))
        own = model.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not any(k.startswith("backbone.") for k in kept):
            raise CheckpointError(f"model.init_checkpoint {path} shares no backbone weights with this "
                                  f"model (backbone {self.cfg.model.backbone}); use a file of the same "
                                  "architecture")
        model.load_state_dict(kept, strict=False)
        fresh = sorted({re.sub(r"\.\d+\.", ".*.", k.rsplit(".", 1)[0]) for k in own if k not in kept})
        self.console.print(f"initialised {len(kept)} of {len(own)} tensors from {path}"
                           + (f" (new: {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''})"
                              if fresh else ""))

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = self.bare_model.param_groups(o.lr, o.new_lr)
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)

    def _build_streams(self) -> dict[str, BatchStream | CachedBatchStream]:
        c, s, seed = self.cfg.data, self.cfg.sampler, self.cfg.train.seed
        transform = self.bare_model.spec.transform(train=True, flip_p=c.flip_p, pad=c.pad,
                                                   erase_p=c.erase_p, erase_max_area=c.erase_max_area)
        train_set = ImageDataset(self.dataset.train, transform)
        pids = [r.pid for r in self.dataset.train]
        dist = {"rank": self.dist.rank, "world_size": self.dist.world_size, "seed": seed}
        samplers = {
            "random": RandomBatchSampler(len(pids), s.batch_size, **dist),
            "balanced": BalancedIdentitySampler(pids, s.num_ids, s.num_instances, **dist),
        }
        if c.input_path == "cache":
            cache = ImageCache(train_set, c.height, c.width, c.interpolation, c.cache_dir,
                               num_workers=c.num_workers)
            augment = BatchAugment(flip_p=c.flip_p, pad=c.pad, erase_p=c.erase_p,
                                   erase_max_area=c.erase_max_area)
            return {name: CachedBatchStream(cache, sampler, augment, seed=seed, stream_id=i,
                                            device=self.device)
                    for i, (name, sampler) in enumerate(samplers.items())}
        pin = self.device.type == "cuda"
        return {name: BatchStream(train_set, sampler, seed=seed, stream_id=i,
                                  num_workers=c.num_workers, pin_memory=pin)
                for i, (name, sampler) in enumerate(samplers.items())}

    # ----------------------------------------------------------------------------- training
    def train_step(self) -> dict[str, Any]:
        """One optimisation step under the scheduler's current decision; returns its log record."""
        decision: Decision = self.scheduler.decision
        images, pids, *_ = next(self.streams[decision.sampler])
        images = images.to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pids = pids.to(self.device, non_blocking=True)
        dtype = torch.bfloat16 if self.cfg.train.amp_dtype == "bfloat16" else torch.float16
        autocast = torch.autocast("cuda", dtype=dtype) if self.amp else nullcontext()
        with autocast:
            out = self.forward(images)
            loss_id = id_loss(out.logits, pids, label_smoothing=self.cfg.loss.label_smoothing)
        joint = decision.objective == "joint"
        feats = out.features.float() if joint else out.features.detach().float()
        trip = self._triplet(feats, pids)
        loss = loss_id
        if joint:
            loss = decision.weights["id"] * loss_id
            if trip.num_valid > 0:
                loss = loss + decision.weights["tp"] * trip.loss
        lr = self.optimizer_step(loss)
        # every rank must decide alike: average the ID loss over ranks, and the triplet loss over
        # the ranks whose batch had a valid triplet; a random batch's triplet value measures
        # something else (few anchors have a positive) and never feeds the average
        valid = trip.num_valid > 0 and decision.sampler == "balanced"
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
        width = self.bare_model.spec.part_dim or feats.shape[1]
        parts = [self.triplet(f, pids) for f in feats.split(width, dim=1)]
        return TripletResult(sum(p.loss for p in parts), min(p.num_valid for p in parts),
                             sum(p.precision for p in parts) / len(parts))
