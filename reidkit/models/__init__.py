"""Model registry: ``build_model(name, num_classes=None, **opts)`` builds any reidkit model."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from reidkit.models.backbones import ARCHITECTURES, ResNetBackbone
from reidkit.models.base import ReIDModel, TrainOutput
from reidkit.models.baseline import GlobalBaseline
from reidkit.models.mtdnet import MTDNet
from reidkit.models.pyramid import Pyramid, stripes
from reidkit.models.spec import ModelSpec, inference_model, model_spec

MODELS: dict[str, Callable[..., nn.Module]] = {
    "pyramid": Pyramid,
    "stripes": stripes,
    "baseline": GlobalBaseline,
    "mtdnet": MTDNet,
}
# how each model is trained: "id-triplet" (ID + triplet losses, dynamic scheduler) or "mtdnet"
# (cross-camera triplets, ranking + verification); the recipe's config family
# (reidkit.config.FAMILIES) and reidkit.training.build_trainer read it. What a built model takes
# and how it ranks is its ``spec`` (reidkit.models.spec.ModelSpec).
TRAINED_BY: dict[str, str] = {"pyramid": "id-triplet", "stripes": "id-triplet",
                              "baseline": "id-triplet", "mtdnet": "mtdnet"}

__all__ = [
    "ARCHITECTURES",
    "MODELS",
    "ModelSpec",
    "TRAINED_BY",
    "GlobalBaseline",
    "Pyramid",
    "ReIDModel",
    "ResNetBackbone",
    "TrainOutput",
    "build_model",
    "inference_model",
    "list_models",
    "model_spec",
]


def list_models() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, num_classes: int | None = None, **opts) -> nn.Module:
    """Build model ``name`` for ``num_classes`` training identities with constructor options ``opts``.

    ``build_model(**model.config)`` rebuilds a model's architecture (e.g. from a checkpoint).
    Models without an identity classifier (MTDnet) ignore ``num_classes``, so one call builds any.
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    ctor = MODELS[key]
    params = inspect.signature(ctor).parameters
    unknown = sorted(set(opts) - set(params))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(p for p in params if p != 'num_classes')}"
        )
    if "num_classes" in params:
        return ctor(num_classes=num_classes, **opts)
    return ctor(**opts)  # no identity classifier (MTDnet): the number of identities is not needed
