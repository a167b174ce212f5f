"""Typed training configuration: YAML recipes plus dotted command-line overrides.

Every key, its default and its meaning live here, in one file. A recipe in ``configs/`` sets only
what differs from these defaults. Unknown keys and wrongly typed values are rejected with a message
that names the key, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 floats: PyYAML reads ``1e-4`` (no dot) as a string, which the strict
    config would refuse; learning rates are written that way all the time."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the offending key."""


class _Section(BaseModel):
    # strict: `epochs: true` is not 1 epoch; no inf/nan learning rates or weights
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                              allow_inf_nan=False)


class DataConfig(_Section):
    dataset: str = "market1501"  # a name from `reidkit datasets list`
    root: str = "data/market1501"  # folder the official archive unpacks to
    options: dict[str, Any] = Field(default_factory=dict)  # passed to load_dataset (split=, ...)
    height: int = Field(384, gt=0)
    width: int = Field(128, gt=0)
    flip_p: float = Field(0.5, ge=0, le=1)
    erase_p: float = Field(0.5, ge=0, le=1)
    pad: int = Field(10, ge=0)
    num_workers: int = Field(2, ge=0)
    val_ids: int = Field(0, ge=0)  # training ids held out to pick the best epoch (0: last epoch)


class ModelConfig(_Section):
    name: str = "pyramid"  # pyramid | stripes | baseline | mtdnet
    backbone: str = "resnet50"
    pretrained: str | bool | None = None  # local ImageNet checkpoint file; true: download it
    options: dict[str, Any] = Field(default_factory=dict)  # num_stripes, feat_dim, dropout, ...


class LossConfig(_Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    triplet_margin: float = Field(1.4, ge=0)
    soft_margin: bool = False
    normalize_features: bool = False  # triplet on L2-normalised features
    # concat: one triplet loss on the concatenated feature (DESIGN); branches: one per branch's
    # 128-d feature, summed (the authors' released train.py)
    triplet_on: Literal["concat", "branches"] = "concat"


class DynamicConfig(_Section):
    # focal: the paper's FL weights; focal-normalized: FL_t / sum FL; sum: the released code's
    # unweighted sum; fixed: constant weights, joint objective, balanced sampler (ablation).
    combine: Literal["focal", "focal-normalized", "sum", "fixed"] = "sum"
    alpha: float = Field(0.25, gt=0, lt=1)
    lam: float = Field(2.0, ge=0)
    delta: float = Field(0.16, ge=0)
    update: Literal["iteration", "epoch"] = "iteration"
    fixed_weights: dict[str, float] = Field(default_factory=lambda: {"id": 1.0, "tp": 1.0})


class SamplerConfig(_Section):
    batch_size: int = Field(64, gt=0)  # per process; the balanced batch is num_ids x num_instances
    num_ids: int = Field(8, gt=0)
    num_instances: int = Field(8, gt=0)

    @model_validator(mode="after")
    def _balanced_fills_batch(self) -> SamplerConfig:
        if self.num_ids * self.num_instances != self.batch_size:
            raise ValueError(
                f"sampler.num_ids x sampler.num_instances ({self.num_ids} x {self.num_instances}) "
                f"must equal sampler.batch_size ({self.batch_size}) so both samplers feed equal batches"
            )
        return self


class OptimConfig(_Section):
    name: Literal["sgd", "adam"] = "sgd"  # adam (no momentum/nesterov) suits short runs from scratch
    lr: float = Field(0.01, gt=0)  # backbone
    new_lr: float = Field(0.1, gt=0)  # layers that are not pretrained
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    warmup_epochs: int = Field(0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    milestones: list[int] = Field(default_factory=lambda: [60, 70, 80, 90, 100])
    gamma: float = Field(0.5, gt=0)


class MTDNetConfig(_Section):
    """Settings of MTDnet training (used when model.name is mtdnet)."""

    triplets_per_batch: int = Field(128, gt=0)  # cross-camera triplets, built both ways
    negatives_per_positive: int = Field(1, gt=0)
    margin: float = Field(1.0, ge=0)  # triplet margin on squared distances
    triplet_weight: float = Field(1.0, ge=0)  # 0: MTDnet-cls
    verification_weight: float = Field(1.0, ge=0)
    init_checkpoint: str | None = None  # fine-tune from a source-trained model file
    # cross-domain: a frozen copy of init_checkpoint's verification path fed source pairs
    cross_domain: bool = False
    contrastive_weight: float = Field(1.0, ge=0)
    source_dataset: str | None = None
    source_root: str | None = None
    source_options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    epochs: int = Field(120, gt=0)
    iters_per_epoch: int | None = Field(None, gt=0)  # default: training images // batch size
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    amp: bool = True  # mixed precision on CUDA; ignored on CPU
    eval_every: int = Field(10, gt=0)  # epochs between validations
    log_every: int = Field(20, gt=0)  # iterations between progress-bar refreshes
    deterministic: bool = False  # bit-exact reruns (slower cuDNN kernels)
    sync_bn: bool = False  # SyncBatchNorm under DDP
    output_dir: str = "runs/pyramid"


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    dynamic: DynamicConfig = Field(default_factory=DynamicConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    mtdnet: MTDNetConfig = Field(default_factory=MTDNetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


RECIPES = Path(__file__).parent / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with reidkit (usable as ``--config NAME``)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of a shipped recipe."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError(f"config {name_or_path} is neither a file nor a shipped recipe "
                      f"({', '.join(list_recipes())})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe (or the defaults when ``path`` is None) and apply ``key.sub=value``.

    ``path`` is a file or the name of a shipped recipe (``pyramid_market1501_r50``).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_recipe(path)
        try:
            raw = _yaml(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw, source=str(path) if path else "defaults")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid {source}: {problems}") from None


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = _yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    node = raw
    *parents, leaf = key.strip().split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node = child
    node[leaf] = value
