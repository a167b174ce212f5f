"""Pyramid (Zheng et al., CVPR 2019): coarse-to-fine part branches over a ResNet feature map."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from reidkit.models.backbones import ResNetBackbone
from reidkit.models.base import ReIDModel, TrainOutput, check_num_classes
from reidkit.models.weights import Pretrained


def stripe_bounds(height: int, num_stripes: int) -> list[int]:
    """Row boundaries of ``num_stripes`` horizontal stripes over ``height`` rows.

    Boundary i is ``floor(i * height / num_stripes)``: every row is used once and stripe heights
    differ by at most one, so heights that ``num_stripes`` does not divide work too.
    """
    return [i * height // num_stripes for i in range(num_stripes + 1)]


def pyramid_pool(fmap: Tensor, num_stripes: int, levels: Sequence[int]) -> Tensor:
    """Average + max pooling of every pyramid branch: (B, C, H, W) -> (num_branches, B, C).

    Level ``l`` has ``num_stripes + 1 - l`` branches of ``l`` consecutive stripes (stride one),
    ordered top to bottom; levels come in increasing order. The map is reduced once per row and
    once per stripe; a level-l window is then the level-(l-1) window plus the next stripe, so
    each branch costs one addition and one maximum.
    """
    height, width = fmap.shape[-2:]
    if height < num_stripes:
        raise ValueError(
            f"the feature map has {height} rows, fewer than num_stripes={num_stripes}; use taller "
            f"input images (at least {num_stripes} x the backbone stride, e.g. 384x128 with "
            "last_stride=1 gives 24 rows) or fewer stripes"
        )
    bounds = stripe_bounds(height, num_stripes)
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    # rows first and contiguous: the stripe reductions then run over whole (B, C) planes
    row_sum = fmap.sum(dim=3).permute(2, 0, 1).contiguous()
    row_max = fmap.amax(dim=3).permute(2, 0, 1).contiguous()
    stripe_sum = torch.stack([row_sum[a:b].sum(dim=0) for a, b in spans])
    stripe_max = torch.stack([row_max[a:b].amax(dim=0) for a, b in spans])
    sums, maxes, pooled = stripe_sum, stripe_max, []
    for level in range(1, max(levels) + 1):
        if level > 1:
            sums = sums[:-1] + stripe_sum[level - 1:]
            maxes = torch.maximum(maxes[:-1], stripe_max[level - 1:])
        if level in levels:
            area = fmap.new_tensor(
                [(bounds[i + level] - bounds[i]) * width for i in range(num_stripes + 1 - level)]
            )
            pooled.append(sums / area[:, None, None] + maxes)
    return torch.cat(pooled)


class BranchHead(nn.Module):
    """One branch: C -> ``feat_dim`` reduction (a 1x1 conv on the pooled vector), BN, ReLU;
    dropout; its own identity classifier."""

    def __init__(self, in_channels: int, feat_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Linear(in_channels, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feat_dim, num_classes)
        # The released code's initialisation: near-zero logits at the start of training.
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)


class Pyramid(ReIDModel):
    """The Pyramid model: 21 part branches for 6 stripes, a 2,688-d retrieval feature.

    The backbone map is split into ``num_stripes`` horizontal stripes; level l (``levels``,
    default all of 1..n) has n+1-l branches of l consecutive stripes, the top level being the
    whole map. Each branch sums global average and max pooling and runs a :class:`BranchHead`.

    In ``train()`` mode ``forward`` returns ``TrainOutput(logits, features)``: a logits tensor per
    branch and the concatenated branch features (B, num_branches * feat_dim), taken after the
    reduction's ReLU and before dropout, as in the authors' released code. ``features.split(
    feat_dim, dim=1)`` gives the per-branch features (the released code sums a triplet loss per
    branch). In ``eval()`` mode it returns those concatenated features, L2-normalised if
    ``normalize_features``. The stripe boundaries follow the map height, so any input size works
    whose map has at least ``num_stripes`` rows.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        num_stripes: int = 6,
        feat_dim: int = 128,
        dropout: float = 0.2,
        last_stride: int = 1,
        levels: Sequence[int] | None = None,
        pretrained: Pretrained = None,
        normalize_features: bool = False,
    ) -> None:
        num_classes = check_num_classes("pyramid", num_classes)
        if not isinstance(num_stripes, int) or num_stripes < 1:
            raise ValueError(f"num_stripes must be a positive int, not {num_stripes!r}")
        if not isinstance(feat_dim, int) or feat_dim < 1:
            raise ValueError(f"feat_dim must be a positive int, not {feat_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        levels = list(range(1, num_stripes + 1)) if levels is None else sorted(levels)
        if not levels or len(set(levels)) != len(levels) \
                or not all(isinstance(lv, int) and 1 <= lv <= num_stripes for lv in levels):
            raise ValueError(
                f"levels must be distinct ints in 1..num_stripes={num_stripes}, not {levels!r}"
            )
        branches = [(first, level) for level in levels for first in range(num_stripes + 1 - level)]
        super().__init__(
            config={"name": "pyramid", "num_classes": num_classes, "backbone": backbone,
                    "num_stripes": num_stripes, "feat_dim": feat_dim, "dropout": dropout,
                    "last_stride": last_stride, "levels": levels,
                    "normalize_features": normalize_features},
            feature_dim=len(branches) * feat_dim,
            normalize_features=normalize_features,
            part_dim=feat_dim,
        )
        self.branches = branches  # (first stripe, number of stripes), in feature order
        self.num_stripes = num_stripes
        self.levels = levels
        self.feat_dim = feat_dim
        self.backbone = ResNetBackbone(backbone, last_stride=last_stride, pretrained=pretrained)
        self.heads = nn.ModuleList(
            BranchHead(self.backbone.out_channels, feat_dim, num_classes, dropout)
            for _ in self.branches
        )

    def forward(self, x: Tensor) -> TrainOutput | Tensor:
        pooled = pyramid_pool(self.backbone(x), self.num_stripes, self.levels)
        feats = [head.reduce(p) for head, p in zip(self.heads, pooled, strict=True)]
        if not self.training:
            return self._eval_features(torch.cat(feats, dim=1))
        logits = [head.classifier(head.dropout(f)) for head, f in zip(self.heads, feats, strict=True)]
        return TrainOutput(logits, torch.cat(feats, dim=1))


def stripes(num_classes: int | None = None, **options) -> Pyramid:
    """PCB-style model: the Pyramid's first level only (``num_stripes`` separate stripes)."""
    if "levels" in options:
        raise ValueError("model 'stripes' is Pyramid with levels=[1]; use model 'pyramid' to "
                         "choose levels")
    return Pyramid(num_classes, levels=[1], **options)


stripes.__signature__ = inspect.signature(Pyramid).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(Pyramid).parameters.values() if p.name != "levels"]
)
