"""Typed training configuration: YAML recipes plus dotted command-line overrides.

Every key, its default and its meaning live here, in one file. A recipe in ``configs/`` sets only
what differs from these defaults and from the recipe it names as ``_base_`` (a shipped recipe or a
file path relative to the recipe), which it extends section by section. Unknown keys and wrongly
typed values are rejected with a message that names the key, so a typo never silently trains the
wrong model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reidkit.errors import ReidkitError


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


class ConfigError(ReidkitError, ValueError):
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
    # augmentation: the Pyramid release's values (flip 0.5, erasing 0.2 of area 0.02-0.4, no
    # pad/crop, bicubic resize); YouReID adds pad 10 + random crop
    flip_p: float = Field(0.5, ge=0, le=1)
    erase_p: float = Field(0.2, ge=0, le=1)
    erase_max_area: float = Field(0.4, gt=0.02, le=1)  # largest erased share of the image
    pad: int = Field(0, ge=0)  # zero padding before a random crop of the training size
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    num_workers: int = Field(2, ge=0)
    # training ids held out for validation curves and best-epoch choice; 0: train on all
    # identities (as the papers do) and keep the last epoch. Never the test set.
    val_ids: int = Field(0, ge=0)


class MTDNetDataConfig(DataConfig):
    # the Caffe release's input: CaffeNet's 227x227 stretch (bilinear), mirroring, no erasing
    height: int = Field(227, gt=0)
    width: int = Field(227, gt=0)
    erase_p: float = Field(0.0, ge=0, le=1)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"


class IDTripletDataConfig(DataConfig):
    # loader: PIL decoding + per-image transforms in loader workers; cache: images decoded once
    # to uint8 at the training size (in memory, or a reusable memory map in cache_dir) and
    # augmented in batches on the training device, which keeps a GPU fed
    input_path: Literal["loader", "cache"] = "loader"
    cache_dir: str | None = None


class ModelConfig(_Section):
    name: str = "pyramid"  # pyramid | stripes | baseline | mtdnet
    backbone: str = "resnet50"
    pretrained: str | bool | None = None  # local ImageNet checkpoint file; true: download it
    options: dict[str, Any] = Field(default_factory=dict)  # num_stripes, feat_dim, dropout, ...


class MTDNetModelConfig(ModelConfig):
    name: str = "mtdnet"
    backbone: str = "caffenet"  # caffenet | resnet18 | resnet50


class IDTripletModelConfig(ModelConfig):
    # fine-tune from a reidkit model file: every weight whose name and shape match is loaded (the
    # ID classifiers of other identities are not); MTDnet's is mtdnet.init_checkpoint
    init_checkpoint: str | None = None


class LossConfig(_Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    triplet_margin: float = Field(1.4, ge=0)
    soft_margin: bool = False
    normalize_features: bool = False  # triplet on L2-normalised features
    # branches: one batch-hard triplet per branch on its 128-d feature, summed (the released
    # code: PersonReID-Pyramid 63ffd64 src/train.py, YouReID models/pyramid.py compute_loss);
    # concat: one triplet on the concatenated 2,688-d feature
    triplet_on: Literal["concat", "branches"] = "branches"


class DynamicConfig(_Section):
    # focal: the paper's FL weights; focal-normalized: FL_t / sum FL; sum: the released code's
    # unweighted sum; fixed: constant weights, joint objective, balanced sampler (ablation).
    combine: Literal["focal", "focal-normalized", "sum", "fixed"] = "sum"
    alpha: float = Field(0.25, gt=0, lt=1)
    lam: float = Field(2.0, ge=0)
    delta: float = Field(0.16, ge=0)
    update: Literal["iteration", "epoch"] = "iteration"
    fixed_weights: dict[str, float] = Field(default_factory=lambda: {"id": 1.0, "tp": 1.0})
    # balanced: every step on the identity-balanced batch, the rule only picks the loss (the
    # released code); switch: ID-only steps on random batches, joint steps on balanced ones (the
    # paper). The triplet average is fed only by balanced batches in both.
    sampler: Literal["balanced", "switch"] = "balanced"


class BatchConfig(_Section):
    batch_size: int = Field(64, gt=0)  # images per forward pass at evaluation (MTDnet's triplet
    # batches are mtdnet.triplets_per_batch)


class SamplerConfig(BatchConfig):
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
    lr: float = Field(0.01, gt=0, le=10)  # backbone
    new_lr: float = Field(0.1, gt=0, le=10)  # layers that are not pretrained
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    warmup_epochs: int = Field(0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    milestones: list[int] = Field(default_factory=lambda: [60, 70, 80, 90, 100])
    gamma: float = Field(0.5, gt=0)


class MTDNetOptimConfig(OptimConfig):
    # Caffe's lr_mult 2 / decay_mult 0 for biases (MTDnet's prototxts); 1 / true: PyTorch's way
    bias_lr_factor: float = Field(1.0, gt=0)
    bias_decay: bool = True


class MTDNetSection(_Section):
    """The ``mtdnet`` section: triplets, loss weights and cross-domain training."""

    triplets_per_batch: int = Field(128, gt=0)  # cross-camera triplets, built both ways
    # all-pairs: every cross-camera positive pair both ways x negatives_per_positive, shuffled
    # (the authors' BuildData_cuhk03.py, 10 negatives); anchors: per epoch each anchor image
    # once with one random positive
    triplet_sampling: Literal["all-pairs", "anchors"] = "all-pairs"
    negatives_per_positive: int = Field(10, gt=0)
    margin: float = Field(1.0, ge=0)  # triplet margin on squared distances
    triplet_weight: float = Field(1.0, ge=0)  # 0: MTDnet-cls
    verification_weight: float = Field(1.0, ge=0)
    # rank embeddings by the mean squared distance over original/mirrored images (the authors'
    # ComputeAccuracy scripts); pair scores always average their 8 passes
    eval_mirror: bool = True
    init_checkpoint: str | None = None  # fine-tune from a source-trained model file
    # cross-domain: a frozen copy of init_checkpoint's verification path fed source pairs
    cross_domain: bool = False
    contrastive_weight: float = Field(1.0, ge=0)
    # triplets: source triplets, each target pair against the source pairs of its index in both
    # statuses; pairs: the authors' Nets/MTDnet-cross (target pair k vs source pair k mod N of an
    # independent half-positive pair list, BuildData/BuildCrossData_CUHK03.py neg_ratio 1)
    contrastive_pairing: Literal["triplets", "pairs"] = "triplets"
    source_dataset: str | None = None
    source_root: str | None = None
    source_options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    epochs: int = Field(120, gt=0)
    iters_per_epoch: int | None = Field(None, gt=0)  # default: training images // batch size
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    amp: bool = True  # mixed precision on CUDA; ignored on CPU
    amp_dtype: Literal["float16", "bfloat16"] = "float16"  # bfloat16 needs no loss scaling
    channels_last: bool = False  # NHWC activations: faster convolutions on tensor cores (and CPU)
    compile: bool = False  # torch.compile the training forward
    eval_every: int = Field(10, gt=0)  # epochs between validations
    log_every: int = Field(20, gt=0)  # iterations between progress-bar refreshes
    deterministic: bool = False  # bit-exact reruns (slower cuDNN kernels)
    sync_bn: bool = False  # SyncBatchNorm under DDP
    output_dir: str = "runs/pyramid"


class Config(_Section):
    """The sections every recipe has. A recipe validates as the family of its ``model.name``
    (:data:`FAMILIES`), which adds that family's own sections and refuses the other's."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sampler: BatchConfig = Field(default_factory=BatchConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class IDTripletConfig(Config):
    """Pyramid, stripes and the global baseline: ID + batch-hard triplet losses under the dynamic
    scheduler, fed identity-balanced batches of ``num_ids`` x ``num_instances``."""

    data: IDTripletDataConfig = Field(default_factory=IDTripletDataConfig)
    model: IDTripletModelConfig = Field(default_factory=IDTripletModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    dynamic: DynamicConfig = Field(default_factory=DynamicConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)


class MTDNetConfig(Config):
    """MTDnet: cross-camera triplets for ranking + verification, optionally cross-domain."""

    data: MTDNetDataConfig = Field(default_factory=MTDNetDataConfig)
    model: MTDNetModelConfig = Field(default_factory=MTDNetModelConfig)
    optim: MTDNetOptimConfig = Field(default_factory=MTDNetOptimConfig)
    mtdnet: MTDNetSection = Field(default_factory=MTDNetSection)


# the config class of each trainer family (reidkit.models.TRAINED_BY maps model names to these)
FAMILIES: dict[str, type[Config]] = {"id-triplet": IDTripletConfig, "mtdnet": MTDNetConfig}


RECIPES = Path(__file__).parent / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with reidkit (usable as ``--config NAME``); bases (``_*``)
    that recipes extend are left out."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml") if not p.stem.startswith("_"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of a shipped recipe."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES / f"{path.stem}.yaml"  # also the bases, so that _base_: _pyramid works
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
        raw = _read_recipe(path, ())
    for item in overrides:
        _apply_override(raw, item)
    source = f"{path} with overrides {' '.join(overrides)}" if overrides else str(path)
    return config_from_dict(raw, source=source if path else "overrides")


def _read_recipe(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """A recipe's mapping with its ``_base_`` chain merged in (the recipe's own values win)."""
    if path.resolve() in chain:
        raise ConfigError(f"{path}: _base_ chain loops ({' -> '.join(p.name for p in chain)})")
    try:
        raw = _yaml(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: _base_ must name a recipe, got {base!r}")
    relative = path.parent / base
    base_path = relative if relative.is_file() else resolve_recipe(base)
    return _merge(_read_recipe(base_path, (*chain, path.resolve())), raw)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``: sections merge key by key, other values are replaced."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        # options dicts are replaced whole: a model's options do not mix with another model's
        merged[key] = _merge(merged[key], value) if both and key != "options" else value
    return merged


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate ``raw`` as the config family of its ``model.name`` (default ``pyramid``)."""
    family = _family(raw, source)
    try:
        return family.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(err, family) for err in exc.errors())
        raise ConfigError(f"invalid {source}: {problems}") from None


def _family(raw: dict[str, Any], source: str) -> type[Config]:
    from reidkit.models import TRAINED_BY

    model = raw.get("model")
    name = model.get("name", ModelConfig().name) if isinstance(model, dict) else ModelConfig().name
    if not isinstance(name, str):  # validation names the wrong type
        return FAMILIES["id-triplet"]
    if name not in TRAINED_BY:
        raise ConfigError(f"invalid {source}: model.name: {name!r} is not a trainable model; "
                          f"choose one of {', '.join(sorted(TRAINED_BY))}")
    return FAMILIES[TRAINED_BY[name]]


def _problem(err: Any, family: type[Config]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] != "extra_forbidden":
        return f"{key}: {err['msg']}"
    owners = [name for name, cls in FAMILIES.items() if cls is not family
              and _has_key(cls, err["loc"])]
    if owners:
        return (f"{key} is not a setting of {_family_name(family)} models "
                f"(it belongs to {', '.join(_family_name(FAMILIES[o]) for o in owners)})")
    return f"{key}: unknown key"


def _has_key(cls: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether the config class ``cls`` has the dotted key ``loc``."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None:
            return False
        cls = field.annotation if isinstance(field.annotation, type) else BaseModel
        if not issubclass(cls, BaseModel):
            return True
    return True


def _family_name(cls: type[Config]) -> str:
    from reidkit.models import TRAINED_BY

    family = next(name for name, c in FAMILIES.items() if c is cls)
    return "/".join(m for m, f in sorted(TRAINED_BY.items()) if f == family)


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
