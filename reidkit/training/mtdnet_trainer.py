"""MTDnet training: cross-camera triplets, ranking + verification losses, cross-domain option.

Each step draws ``mtdnet.triplets_per_batch`` cross-camera triplets (anchor in camera A, positive
and negative in camera B, and the mirror) from a resumable seeded stream. The ranking head gets
the triplet loss on squared distances, the verification head the positive and negative pairs of
the same triplets. With ``mtdnet.cross_domain`` a frozen copy of the source-trained model
(``mtdnet.init_checkpoint``) is fed source triplets from a second stream, and a contrastive loss
ties the target's joint pair features to the source's (Chen et al., AAAI 2017).

Conventions are those of :class:`reidkit.training.trainer.Trainer`: an atomic checkpoint every
epoch, exact ``resume``, ``metrics.jsonl``, a rich progress bar, and the best epoch chosen on a
validation split carved from the training identities. Only the target network is ever saved.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import Tensor, nn

from reidkit.config import MTDNetConfig
from reidkit.data import ImageRecord, ReIDDataset, load_dataset
from reidkit.data.loader import ImageDataset
from reidkit.data.samplers import (
    AllPairsTripletSampler,
    CrossCameraPairSampler,
    CrossCameraTripletSampler,
    FlattenedBatchSampler,
)
from reidkit.models.io import CheckpointError, load_model, read_model_meta
from reidkit.models.mtdnet import CrossDomainLoss, CrossDomainMTDNet, MTDNet, MTDNetLoss
from reidkit.training.base import TrainerBase
from reidkit.training.streams import BatchStream

_HEADS = ("rank_fc.", "rank_head.", "verifier.")


def init_from_checkpoint(model: MTDNet, path: str | Path) -> list[str]:
    """Copy a model file's weights into ``model``; returns the heads left at random init.

    The file must hold an MTDnet of the same trunk, input size and ranking dimension. A head the
    file lacks (fine-tuning a ``cls`` model into ``mtd``) keeps its fresh weights and is named in
    the result; a head ``model`` lacks is ignored.
    """
    config, _ = read_model_meta(path, expect={"name": "mtdnet"})
    for key in ("trunk", "input_size", "rank_dim"):
        if config.get(key) != model.config[key] and not (key == "rank_dim" and not model.has_ranking):
            raise CheckpointError(
                f"mtdnet.init_checkpoint {path} has {key}={config.get(key)!r} but this run "
                f"builds {key}={model.config[key]!r}; set the model options to match the file")
    state = load_file(str(path))
    own = model.state_dict()
    fresh = [h.rstrip(".") for h in _HEADS
             if any(k.startswith(h) for k in own) and not any(k.startswith(h) for k in state)]
    kept = {k: v for k, v in state.items() if k in own}
    missing = sorted(k for k in own if k not in kept and not k.startswith(_HEADS))
    if missing:
        raise CheckpointError(f"mtdnet.init_checkpoint {path} lacks trunk weights "
                              f"{', '.join(missing[:4])}; is it an MTDnet model file?")
    model.load_state_dict(kept, strict=False)
    return fresh


class MTDNetTrainer(TrainerBase):
    """Build everything an MTDnet recipe describes and run it: ``MTDNetTrainer(cfg).fit()``."""

    task_name = "train mtdnet"

    def __init__(self, cfg: MTDNetConfig, *, resume: bool = False, console: Console | None = None):
        if not isinstance(cfg, MTDNetConfig):
            raise TypeError(f"MTDNetTrainer trains MTDnet recipes, got one for {cfg.model.name!r}; "
                            "use reidkit.training.build_trainer")
        super().__init__(cfg, console)
        self.mirror_at_test = cfg.mtdnet.eval_mirror
        if self.dist.enabled:
            raise ValueError("MTDnet training runs in one process; launch it without torchrun")
        self.dataset, self.val = self._load_data(cfg.data.dataset, cfg.data.root, cfg.data.options,
                                                 cfg.data.val_ids)
        self.target = self._build_target()
        self.model: MTDNet | CrossDomainMTDNet = (
            self._cross_domain(self.target) if cfg.mtdnet.cross_domain else self.target)
        m = cfg.mtdnet
        loss_args = {"triplet_weight": m.triplet_weight,
                     "verification_weight": m.verification_weight, "margin": m.margin}
        self.loss: nn.Module = (CrossDomainLoss(contrastive_weight=m.contrastive_weight, **loss_args)
                                if m.cross_domain else MTDNetLoss(**loss_args))
        self.optimizer = self._build_optimizer()
        self.streams = self._build_streams()
        self.iters_per_epoch = cfg.train.iters_per_epoch or len(self.streams["target"].sampler)
        self._finish_setup(resume)

    @property
    def saved_model(self) -> nn.Module:
        # the frozen source is rebuilt from init_checkpoint on resume: only the target is kept
        return self.target

    @property
    def model_in_training(self) -> nn.Module:
        return self.model

    # ----------------------------------------------------------------------------- set-up
    def _load_data(self, name: str, root: str, options: dict[str, Any], val_ids: int
                   ) -> tuple[ReIDDataset, tuple[list[ImageRecord], list[ImageRecord]] | None]:
        """The training set and a validation query/gallery: the data set's own validation list
        when it has one (CUHK03 classic), else ``val_ids`` identities carved from training."""
        dataset = load_dataset(name, root, **options)
        held = dataset.val
        if not held and val_ids:
            dataset, val_query, val_gallery = dataset.carve_validation(val_ids, self.cfg.train.seed)
            held = val_query + val_gallery
        return dataset, split_validation(held) if held else None

    def _build_target(self) -> MTDNet:
        c, m, t = self.cfg.data, self.cfg.model, self.cfg.mtdnet
        options = dict(m.options)
        size = [c.height, c.width]
        if list(options.pop("input_size", size)) != size:
            raise ValueError(f"model.options.input_size must equal data.height x data.width "
                             f"({c.height}x{c.width}); drop it or change both")
        if "trunk" in options:
            raise ValueError("set the MTDnet trunk with model.backbone (caffenet, resnet18, "
                             "resnet50), not model.options.trunk")
        model = MTDNet(trunk=m.backbone, input_size=size, pretrained=m.pretrained, **options)
        model.spec = model.spec.trained_at(size, c.interpolation)
        if t.cross_domain and not t.init_checkpoint:
            raise ValueError("mtdnet.cross_domain needs mtdnet.init_checkpoint: the model file "
                             "trained on the source data set")
        if t.init_checkpoint:
            fresh = init_from_checkpoint(model, t.init_checkpoint)
            note = f" ({', '.join(fresh)} freshly initialised)" if fresh else ""
            self.console.print(f"initialised from {t.init_checkpoint}{note}")
        return model.to(self.device)

    def _cross_domain(self, model: MTDNet) -> CrossDomainMTDNet:
        """``model`` as the target beside a frozen source network from mtdnet.init_checkpoint."""
        t, size = self.cfg.mtdnet, model.spec.input_size
        if not (t.source_dataset and t.source_root):
            raise ValueError("mtdnet.cross_domain needs mtdnet.source_dataset and "
                             "mtdnet.source_root (the data set the init_checkpoint was trained on)")
        source = load_model(t.init_checkpoint, expect={"name": "mtdnet"})
        if source.spec.input_size != size:
            raise ValueError(f"the source model takes {source.spec.input_size} images but "
                             f"data.height x data.width is {size}; they must match")
        return CrossDomainMTDNet(model, source).to(self.device)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """Trunk at ``optim.lr``, heads at ``optim.new_lr``, biases at ``optim.bias_lr_factor``
        times that and without weight decay unless ``optim.bias_decay`` (Caffe's lr_mult 2 /
        decay_mult 0 in the authors' prototxts); the frozen source is left out."""
        o = self.cfg.optim
        trunk_ids = {id(p) for p in self.target.trunk.parameters()}
        groups = []
        for name, param in self.target.named_parameters():
            lr = o.lr if id(param) in trunk_ids else o.new_lr
            decay = o.weight_decay
            if name.endswith(".bias"):
                lr, decay = lr * o.bias_lr_factor, decay if o.bias_decay else 0.0
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
        groups = _merge_groups(groups)
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)

    def _transform(self) -> Any:
        """MTDnet's training input: a stretch to the model size and mirroring, normalised as the
        model's spec says (not at all for Caffe input)."""
        c = self.cfg.data
        return self.target.spec.transform(train=True, flip_p=c.flip_p, pad=c.pad, erase_p=c.erase_p,
                                          erase_max_area=c.erase_max_area)

    def _stream(self, records: list[ImageRecord], stream_id: int) -> BatchStream:
        m = self.cfg.mtdnet
        kind = AllPairsTripletSampler if m.triplet_sampling == "all-pairs" else CrossCameraTripletSampler
        sampler = kind([r.pid for r in records], [r.camid for r in records], m.triplets_per_batch,
                       m.negatives_per_positive, rank=0, world_size=1, seed=self.cfg.train.seed)
        return BatchStream(ImageDataset(records, self._transform()),
                           FlattenedBatchSampler(sampler, fields=3), seed=self.cfg.train.seed,
                           stream_id=stream_id, num_workers=self.cfg.data.num_workers,
                           pin_memory=self.device.type == "cuda")

    def _pair_stream(self, records: list[ImageRecord], stream_id: int) -> BatchStream:
        sampler = CrossCameraPairSampler([r.pid for r in records], [r.camid for r in records],
                                         self.cfg.mtdnet.triplets_per_batch, 0.5, rank=0,
                                         world_size=1, seed=self.cfg.train.seed)
        return BatchStream(ImageDataset(records, self._transform()),
                           FlattenedBatchSampler(sampler, fields=2), seed=self.cfg.train.seed,
                           stream_id=stream_id, num_workers=self.cfg.data.num_workers,
                           pin_memory=self.device.type == "cuda")

    def _build_streams(self) -> dict[str, BatchStream]:
        streams = {"target": self._stream(self.dataset.train, 0)}
        m = self.cfg.mtdnet
        if m.cross_domain:
            source = load_dataset(m.source_dataset or "", m.source_root or "", **m.source_options)
            build = self._pair_stream if m.contrastive_pairing == "pairs" else self._stream
            streams["source"] = build(source.train, 1)
        return streams

    # ----------------------------------------------------------------------------- training
    def _next_triplets(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        images, *_ = next(self.streams[name])
        images = images.to(self.device, non_blocking=True)
        # the flattened sampler loads a0, p0, n0, a1, ...: regroup into the three roles
        grouped = images.view(-1, 3, *images.shape[1:])
        return grouped[:, 0], grouped[:, 1], grouped[:, 2]

    def _next_pairs(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        images, pids, *_ = next(self.streams[name])
        images = images.to(self.device, non_blocking=True)
        first, second = images.view(-1, 2, *images.shape[1:]).unbind(1)
        same = (pids[0::2] == pids[1::2]).to(self.device)
        return first, second, same

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on a batch of triplets; returns its log record."""
        target = self._next_triplets("target")
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            if self.cfg.mtdnet.cross_domain and self.cfg.mtdnet.contrastive_pairing == "pairs":
                outputs = self.model.forward_source_pairs(target, *self._next_pairs("source"))
            elif self.cfg.mtdnet.cross_domain:
                outputs = self.model.forward_triplets(target, self._next_triplets("source"))
            else:
                outputs = self.model.forward_triplets(*target)
            terms = self.loss(outputs)
        lr = self.optimizer_step(terms["total"])
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "lr": lr}
        record.update({("loss" if k == "total" else k): v.item() for k, v in terms.items()})
        return record

    def status(self, record: dict[str, Any]) -> str:
        return _status(record)


def split_validation(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Per identity, the images of its first camera as queries and the rest as gallery.

    Unlike one query per camera, this keeps a gallery match for sets with one image per camera
    (VIPeR, PRID2011); identities seen by one camera only are dropped.
    """
    cams: dict[int, set[int]] = {}
    for r in records:
        cams.setdefault(r.pid, set()).add(r.camid)
    usable = [r for r in records if len(cams[r.pid]) > 1]
    query = [r for r in usable if r.camid == min(cams[r.pid])]
    gallery = [r for r in usable if r.camid != min(cams[r.pid])]
    if not query:
        raise ValueError("no validation identity is seen by two cameras; raise data.val_ids or "
                         "set it to 0 to keep the last epoch")
    return query, gallery


def _merge_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One optimiser group per distinct (lr, weight decay), parameters in model order."""
    merged: dict[tuple[float, float], dict[str, Any]] = {}
    for g in groups:
        key = (g["lr"], g["weight_decay"])
        merged.setdefault(key, {"params": [], "lr": key[0], "weight_decay": key[1]})["params"] += g["params"]
    return list(merged.values())


def _status(record: dict[str, Any]) -> str:
    return " ".join(f"{k[:4]} {record[k]:.3f}"
                    for k in ("loss", "triplet", "verification", "contrastive") if k in record)
