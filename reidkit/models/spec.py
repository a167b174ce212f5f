"""The model contract: what a model takes as input and how it ranks a query against a gallery.

Every registered model carries a :class:`ModelSpec` as ``model.spec`` (the pattern of timm's
``pretrained_cfg``). Evaluation, extraction, serving and export read it through
:func:`model_spec` and build their test transform with :meth:`ModelSpec.test_transform` instead
of probing the model's attributes (``model.config``, its constructor arguments, is only recorded
and shown). Model files written before the interpolation was recorded read as bilinear, which is
how reidkit resized them at test time then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from reidkit.errors import ReidkitError

RanksBy = Literal["embedding", "pairs"]


class InputSizeError(ReidkitError, ValueError):
    """An input size a model cannot take, or none known where one is needed."""


class NoEmbeddingError(ReidkitError, ValueError):
    """Features asked of a model that has none (MTDnet's verification-only 'cls' variant)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and how it ranks.

    The network is fed RGB images scaled to [0, 1], normalised by ``mean``/``std`` when they are
    set. ``network_input`` says what its first layer then sees: ``"rgb-normalized"``, or
    ``"caffe-bgr-255"`` for Caffe-converted trunks, which reorder and scale inside ``forward``
    (MTDnet's CaffeNet), so they take un-normalised images. ``input_size`` is the (height,
    width) the model was trained at (None: not known yet, e.g. a model just built);
    ``fixed_size`` models take no other (MTDnet's fully connected layers). ``ranks_by`` is
    ``"embedding"`` (Euclidean distances of ``forward``'s features) or ``"pairs"`` (MTDnet's
    verification scores of every query-gallery pair); ``scores_pairs`` models have the
    verification head that scores pairs (every MTDnet variant but the ``rnk`` ones). ``part_dim`` is the
    width of each part feature in the concatenated ``feature_dim`` one (None: a single feature).
    """

    feature_dim: int
    input_size: tuple[int, int] | None = None
    fixed_size: bool = False
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    network_input: Literal["rgb-normalized", "caffe-bgr-255"] = "rgb-normalized"
    ranks_by: RanksBy = "embedding"
    scores_pairs: bool = False
    part_dim: int | None = None

    def check_embedding(self) -> None:
        """Raise :class:`NoEmbeddingError` unless ``forward`` gives features to rank by."""
        if not self.feature_dim:
            raise NoEmbeddingError("this model has no embedding (MTDnet's verification-only 'cls' "
                                   "variant): it ranks by pair scores and gives no features")

    def resolve_size(self, size: Sequence[int] | None = None) -> tuple[int, int]:
        """``size`` (height, width) if given and allowed, else the model's own input size."""
        if size is not None:
            if len(size) != 2 or min(size) < 1:
                raise InputSizeError(f"an input size is (height, width) with positive values; "
                                     f"got {tuple(size)}")
            size = (int(size[0]), int(size[1]))
            if self.fixed_size and size != self.input_size:
                raise InputSizeError(f"this model takes {self.input_size[0]}x{self.input_size[1]} "
                                     f"images only; got {size[0]}x{size[1]}")
            return size
        if self.input_size is None:
            raise InputSizeError("the model's input size is not known; pass (height, width), "
                                 "the size it was trained at (e.g. 384x128 for Pyramid)")
        return self.input_size

    def transform(self, size: Sequence[int] | None = None, *, train: bool = False,
                  **augment: Any) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> (3, H, W) tensor for this model: resized with its interpolation to
        ``size`` (default: its input size), scaled to [0, 1], normalised if it wants;
        ``train`` adds the ``augment`` steps of :func:`~reidkit.data.transforms.build_transforms`."""
        height, width = self.resolve_size(size)
        return build_transforms(height, width, train=train, interpolation=self.interpolation,
                                normalize=self.mean is not None, mean=self.mean or IMAGENET_MEAN,
                                std=self.std or IMAGENET_STD, **augment)

    def test_transform(self, size: Sequence[int] | None = None
                       ) -> Callable[[Image.Image], torch.Tensor]:
        """The transform every evaluation, extraction and service uses for this model."""
        return self.transform(size)

    def trained_at(self, size: Sequence[int] | None,
                   interpolation: str | None = None) -> ModelSpec:
        """This spec with the input size and interpolation a model was trained (or saved) with."""
        size = self.resolve_size(size) if size is not None else self.input_size
        return dataclasses.replace(self, input_size=size,
                                   interpolation=interpolation or self.interpolation)

    def preprocessing(self) -> dict[str, Any]:
        """The part of the spec a model file records (read back by :meth:`trained_at`)."""
        return {"input_size": list(self.input_size) if self.input_size else None,
                "interpolation": self.interpolation}

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def inference_model(model: nn.Module) -> nn.Module:
    """The network that runs at test time: ``model`` out of DDP's ``.module`` and out of
    training-only wrappers (``CrossDomainMTDNet`` gives its target network)."""
    bare = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner = getattr(bare, "inference_model", None)
    return inner() if callable(inner) else bare


def model_spec(model: nn.Module) -> ModelSpec:
    """The spec of ``model`` (of its test-time network: see :func:`inference_model`)."""
    bare = inference_model(model)
    spec = getattr(bare, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"{type(bare).__name__} is not a reidkit model: it has no ModelSpec "
                        "(build it with reidkit.models.build_model)")
    return spec


def restore_preprocessing(model: nn.Module, recorded: Mapping[str, Any]) -> None:
    """Set ``model.spec`` to the input size and interpolation a model file ``recorded``."""
    spec = model_spec(model)
    model.spec = spec.trained_at(recorded.get("input_size"), recorded.get("interpolation"))
