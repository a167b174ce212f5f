"""What every backbone-based re-ID model shares: the training output, config and parameter groups."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.models.backbones import ResNetBackbone
from reidkit.models.spec import ModelSpec


class TrainOutput(NamedTuple):
    """Forward result in ``train()`` mode: one logits tensor per branch, and the triplet feature."""

    logits: list[Tensor]
    features: Tensor


class ReIDModel(nn.Module):
    """Base of the backbone + heads models.

    ``forward`` returns :class:`TrainOutput` in ``train()`` mode and the (B, ``feature_dim``)
    retrieval feature in ``eval()`` mode. ``config`` holds the registry name and constructor
    arguments, so ``build_model(**model.config)`` rebuilds the architecture; it records
    ``pretrained=None`` because a checkpoint's weights replace the ImageNet ones anyway.
    ``spec`` is the model contract (:class:`~reidkit.models.spec.ModelSpec`).
    """

    backbone: ResNetBackbone

    def __init__(self, config: dict[str, Any], feature_dim: int,
                 normalize_features: bool, part_dim: int | None = None) -> None:
        super().__init__()
        self.config = {**config, "pretrained": None}
        self.feature_dim = feature_dim
        self.normalize_features = normalize_features
        # any input size; the trainer and model files record the one it was trained at
        self.spec = ModelSpec(feature_dim=feature_dim, part_dim=part_dim)

    def _eval_features(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=1) if self.normalize_features else features

    def param_groups(self, base_lr: float, new_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the (pretrained) backbone at ``base_lr``, the new layers at ``new_lr``."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        in_backbone = {id(p) for p in backbone}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in in_backbone]
        return [
            {"name": "backbone", "params": backbone, "lr": base_lr},
            {"name": "new", "params": new, "lr": new_lr},
        ]


def check_num_classes(model: str, num_classes: int | None) -> int:
    """Validate the number of training identities a classifier-trained model needs."""
    try:
        value = operator.index(num_classes)  # accepts numpy ints, rejects floats and None
    except TypeError:
        value = 0
    if value < 1 or isinstance(num_classes, bool):
        raise ValueError(
            f"model {model!r} needs num_classes, the number of training identities "
            f"(ReIDDataset.num_train_pids), as a positive int; got {num_classes!r}"
        )
    return value
