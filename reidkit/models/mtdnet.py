"""MTDnet: "A Multi-Task Deep Network for Person Re-Identification" (Chen et al., AAAI 2017).

One trunk (CaffeNet conv1-conv2) is shared by every input image. Two tasks sit on it:

* ranking: ``fc(flattened conv2 map) -> 512``, L2-normalised, trained with a triplet loss on
  squared distances (:func:`reidkit.losses.ranking.squared_triplet_loss`);
* verification: the conv2 maps of two images concatenated on channels -> conv3 -> conv4 -> conv5
  -> pool5 -> fc6 -> fc7 -> fc8 (2-way softmax: different / same), trained with
  :func:`reidkit.losses.verification.verification_loss` on the positive and negative pairs of the
  same triplets.

The cross-domain architecture (:class:`CrossDomainMTDNet`) adds a contrastive loss between the
pre-ReLU fc7 of target pairs and of source pairs run through a frozen source-trained network.

Input convention. The authors' Caffe release feeds BGR images in 0-255 without mean subtraction.
With ``caffe_input=True`` (the default for the CaffeNet trunk) the model takes RGB images in
[0, 1] -- ``ToTensor()`` without ``Normalize`` -- and converts them to that convention itself, so
converted BVLC weights see what they were trained on. With ``caffe_input=False`` (the default for
the ResNet trunks) images are used as given: normalise them with the ImageNet mean and std as
torchvision's ResNet weights expect.

Variants (``variant=``), the paper's ablations:

* ``"mtd"`` -- both tasks; the gallery is ranked by verification scores of image pairs
  (:mod:`reidkit.retrieval.pair_ranking`), the paper's MTDnet.
* ``"trp"`` -- both tasks; the gallery is ranked by distances between ranking embeddings (MTDtrp).
* ``"cls"`` -- the verification network alone (triplet weight 0): no ranking head.
* ``"rnk"`` -- the paper's ranking-only baseline, the authors' ``Nets/MTDnet-rnk``: the whole
  CaffeNet on one image (conv1-conv5 with LRN before pooling as in AlexNet, fc6/fc7 4096, fc8 ->
  ``rank_dim``), L2-normalised, trained with the triplet loss; no verification head.
* ``"rnk-shallow"`` -- MTDtrp's network (conv1-conv2 + fc) trained alone with the triplet loss
  (not in the paper; an ablation between ``rnk`` and ``trp``).

``forward(images)`` returns the L2-normalised ranking embedding in train and eval mode, so the
common feature extraction and evaluation work unchanged for ``trp``/``rnk`` (and give MTDtrp
numbers for an ``mtd`` model).

``init="caffe"`` draws every layer that is not loaded from ImageNet as the authors' prototxts do
(Gaussian weights, constant biases; :func:`caffe_init`); ``init="pytorch"`` keeps PyTorch's
defaults. Training steps use :meth:`MTDNet.forward_triplets` with
:class:`MTDNetLoss`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidkit.losses.contrastive import cross_domain_contrastive_loss, indexed_contrastive_loss
from reidkit.losses.ranking import squared_triplet_loss
from reidkit.losses.verification import verification_loss
from reidkit.models.spec import ModelSpec
from reidkit.models.weights import Pretrained, read_state_dict, resolve_pretrained

TRUNKS = ("caffenet", "resnet18", "resnet50")
VARIANTS = ("mtd", "trp", "cls", "rnk", "rnk-shallow")
INITS = ("pytorch", "caffe")
MAP_CHANNELS = 256  # channels of the shared maps (CaffeNet conv2; ResNet trunks project to it)
_LAYER3_CHANNELS = {"resnet18": 256, "resnet50": 1024}


class CaffeNetTrunk(nn.Module):
    """CaffeNet conv1-conv2: 227x227x3 -> 13x13x256.

    conv1 96 11x11/4, ReLU, max-pool 3/2, LRN(5, 1e-4, 0.75); conv2 256 5x5 pad 2 group 2, ReLU,
    max-pool 3/2, LRN. Pooling rounds up like Caffe's (identical sizes for 227x227 input).
    ``lrn_first`` normalises before pooling (AlexNet's order, used by ``Nets/MTDnet-rnk``).
    """

    out_channels = MAP_CHANNELS

    def __init__(self, lrn_first: bool = False) -> None:
        super().__init__()
        self.lrn_first = lrn_first
        self.conv1 = nn.Conv2d(3, 96, kernel_size=11, stride=4)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x: Tensor) -> Tensor:
        if self.lrn_first:
            x = self.pool1(self.norm1(F.relu(self.conv1(x))))
            return self.pool2(self.norm2(F.relu(self.conv2(x))))
        x = self.norm1(self.pool1(F.relu(self.conv1(x))))
        return self.norm2(self.pool2(F.relu(self.conv2(x))))


class ResNetTrunk(nn.Module):
    """torchvision ResNet stem and layer1-layer3, then a 1x1 conv + BN + ReLU to 256 channels.

    layer3 ends at stride 16, the stride of CaffeNet's conv2 (227x227 -> 15x15 here, 13x13
    there), so the verification head sees maps of the same scale. The projection ("neck") keeps
    the ranking fc near CaffeNet's size (15*15*256 = 57,600 inputs instead of 230,400 for
    ResNet-50's 1,024 channels) and lets the verification head be CaffeNet's unchanged.
    Parameter names below the neck are torchvision's, so its ImageNet weights load directly.
    """

    out_channels = MAP_CHANNELS

    def __init__(self, depth: str) -> None:
        super().__init__()
        net = {"resnet18": resnet18, "resnet50": resnet50}[depth](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.neck = nn.Sequential(
            nn.Conv2d(_LAYER3_CHANNELS[depth], MAP_CHANNELS, kernel_size=1, bias=False),
            nn.BatchNorm2d(MAP_CHANNELS),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.neck(self.layer3(self.layer2(self.layer1(x))))


class CaffeNetHead(nn.Module):
    """CaffeNet conv3-fc8 over maps of ``in_channels``: the deep layers of both MTDnet networks.

    conv3 384 3x3 pad 1, ReLU; conv4 384 3x3 pad 1 group 2, ReLU; conv5 256 3x3 pad 1 group 2,
    ReLU; max-pool 3/2; fc6, ReLU, dropout; fc7, ReLU, dropout; fc8 ``out_dim``. ``fc_width``
    narrows fc6/fc7 (the paper's 4096 hold 40 M parameters: too heavy for CPU experiments).
    """

    def __init__(self, in_channels: int, map_hw: tuple[int, int], dropout: float,
                 fc_width: int = 4096, out_dim: int = 2) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(in_channels, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        pooled = [math.ceil((s - 3) / 2) + 1 for s in map_hw]
        self.fc6 = nn.Linear(256 * pooled[0] * pooled[1], fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, maps: Tensor) -> Tensor:
        """fc8's output (N, out_dim) for maps (N, in_channels, h, w)."""
        return self.from_conv3(self.conv3(maps))

    def from_conv3(self, pre: Tensor, return_fc7: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The head from conv3's output (N, 384, h, w), before its ReLU, to fc8."""
        x = F.relu(self.conv5(F.relu(self.conv4(F.relu(pre)))))
        x = self.dropout(F.relu(self.fc6(self.pool5(x).flatten(1))))
        fc7 = self.fc7(x)
        out = self.fc8(self.dropout(F.relu(fc7)))
        return (out, fc7) if return_fc7 else out


class VerificationHead(CaffeNetHead):
    """CaffeNet conv3-fc8 over the channel-concatenated maps of two images; fc8 has 2 outputs."""

    def __init__(self, map_channels: int, map_hw: tuple[int, int], dropout: float,
                 fc_width: int = 4096) -> None:
        super().__init__(2 * map_channels, map_hw, dropout, fc_width, out_dim=2)
        self.map_channels = map_channels

    def forward(  # type: ignore[override]
        self, maps_a: Tensor, maps_b: Tensor, return_fc7: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (N, 2) for pairs (a_i, b_i); with ``return_fc7`` also the pre-ReLU fc7 (N, 4096)."""
        return self.from_conv3(self.conv3(torch.cat([maps_a, maps_b], dim=1)), return_fc7)

    def conv3_parts(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """conv3's response to ``maps`` placed first (bias included) and placed second in a pair.

        conv3 is linear in its input, so ``conv3(cat(a, b)) = first(a) + second(b)``: gallery
        ranking computes each image's parts once instead of once per pair.
        """
        c = self.map_channels
        w = self.conv3.weight
        return (F.conv2d(maps, w[:, :c], self.conv3.bias, padding=1),
                F.conv2d(maps, w[:, c:], padding=1))


@dataclass
class TripletOutputs:
    """What one MTDnet training step computes on N triplets (fields absent for a variant: None).

    ``anchor``/``positive``/``negative``: (N, rank_dim) ranking embeddings; ``pos_logits`` /
    ``neg_logits``: (N, 2) verification logits of pairs (a_i, p_i) and (a_i, n_i); ``pos_fc7`` /
    ``neg_fc7``: their pre-ReLU fc7 (N, 4096).
    """

    anchor: Tensor | None
    positive: Tensor | None
    negative: Tensor | None
    pos_logits: Tensor | None
    neg_logits: Tensor | None
    pos_fc7: Tensor | None
    neg_fc7: Tensor | None


class MTDNet(nn.Module):
    """MTDnet with a CaffeNet (paper) or ResNet-18/50 (conv1-layer3) trunk; see the module doc.

    ``pretrained`` initialises the trunk (the only ImageNet-initialised part): None for random
    weights, a file path (see :func:`load_trunk_weights`), or True for torchvision's ImageNet
    download (ResNet trunks only).
    """

    def __init__(
        self,
        trunk: str = "caffenet",
        rank_dim: int = 512,
        dropout: float = 0.5,
        input_size: Sequence[int] = (227, 227),
        variant: str = "mtd",
        caffe_input: bool | None = None,
        pretrained: Pretrained = None,
        fc_width: int = 4096,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown MTDnet init {init!r}; choose one of {', '.join(INITS)}")
        if not isinstance(fc_width, int) or fc_width < 2:
            raise ValueError(f"fc_width must be an int >= 2, got {fc_width!r}")
        if trunk not in TRUNKS:
            raise ValueError(f"unknown MTDnet trunk {trunk!r}; choose one of {', '.join(TRUNKS)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown MTDnet variant {variant!r}; choose one of "
                             f"{', '.join(VARIANTS)}")
        if len(input_size) != 2 or min(input_size) < 67:
            raise ValueError(f"input_size must be (height, width) of at least 67 pixels each, "
                             f"got {tuple(input_size)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if caffe_input is None:
            caffe_input = trunk == "caffenet"
        height, width = int(input_size[0]), int(input_size[1])
        # pretrained is recorded as None: a checkpoint's weights replace the ImageNet ones.
        self.config: dict[str, Any] = {
            "name": "mtdnet", "trunk": trunk, "rank_dim": rank_dim, "dropout": dropout,
            "input_size": [height, width], "variant": variant, "caffe_input": caffe_input,
            "pretrained": None, "fc_width": fc_width, "init": init,
        }
        self.variant = variant
        self.caffe_input = caffe_input
        deep_rank = variant == "rnk"
        self.trunk = CaffeNetTrunk(lrn_first=deep_rank) if trunk == "caffenet" else ResNetTrunk(trunk)
        self.trunk.eval()  # the shape probe must not touch BatchNorm statistics
        with torch.no_grad():
            self.map_shape: tuple[int, int, int] = tuple(
                self.trunk(torch.zeros(1, 3, height, width)).shape[1:])
        self.trunk.train()
        self.rank_fc: nn.Linear | None = (
            None if variant in ("cls", "rnk") else nn.Linear(math.prod(self.map_shape), rank_dim))
        self.rank_head: CaffeNetHead | None = (
            CaffeNetHead(self.map_shape[0], self.map_shape[1:], dropout, fc_width, rank_dim)
            if deep_rank else None)
        self.verifier: VerificationHead | None = (
            None if variant.startswith("rnk")
            else VerificationHead(self.map_shape[0], self.map_shape[1:], dropout, fc_width))
        if init == "caffe":
            caffe_init(self)
        if trunk != "caffenet":
            state = resolve_pretrained(trunk, pretrained)
        elif pretrained is True:
            raise ValueError("CaffeNet weights cannot be downloaded; pass pretrained=<path> of the "
                             "BVLC CaffeNet weights converted to a PyTorch state dict")
        else:
            state = None if pretrained in (None, False) else read_state_dict(pretrained)
        if state is not None:
            source = str(pretrained) if pretrained is not True else f"torchvision's {trunk}"
            _load_trunk_state(self, state, source)
        # the fully connected layers fix the input size; the pair variants rank by pair scores
        self.spec = ModelSpec(
            feature_dim=rank_dim if self.has_ranking else 0, input_size=(height, width),
            fixed_size=True, mean=None if caffe_input else IMAGENET_MEAN,
            std=None if caffe_input else IMAGENET_STD,
            network_input="caffe-bgr-255" if caffe_input else "rgb-normalized",
            ranks_by="pairs" if variant in ("mtd", "cls") else "embedding",
            scores_pairs=self.verifier is not None)

    def trunk_features(self, images: Tensor) -> Tensor:
        """Shared maps (N, 256, h, w) of images (N, 3, H, W); 13x13 for 227x227 CaffeNet input."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if list(images.shape[2:]) != self.config["input_size"]:
            raise ValueError(
                f"this model takes {self.config['input_size'][0]}x{self.config['input_size'][1]} "
                f"images (input_size), got {images.shape[2]}x{images.shape[3]}; resize the "
                "images or build the model with the input_size you use")
        if self.caffe_input:
            images = images[:, [2, 1, 0]] * 255.0  # RGB in [0, 1] -> Caffe's BGR in [0, 255]
        return self.trunk(images)

    @property
    def has_ranking(self) -> bool:
        """Whether this variant has a ranking embedding (every variant but ``cls``)."""
        return self.rank_fc is not None or self.rank_head is not None

    def rank_embedding(self, maps: Tensor) -> Tensor:
        """The L2-normalised ranking embedding (N, rank_dim) of trunk maps."""
        if self.rank_head is not None:
            return F.normalize(self.rank_head(maps), dim=1)
        if self.rank_fc is None:
            raise ValueError("the 'cls' MTDnet variant has no ranking head; rank its gallery by "
                             "pair scores (reidkit.retrieval.pair_ranking)")
        return F.normalize(self.rank_fc(maps.flatten(1)), dim=1)

    def verify_logits(
        self, maps_a: Tensor, maps_b: Tensor, return_fc7: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Verification logits (N, 2) (index 1 = same person) for map pairs (a_i, b_i).

        With ``return_fc7`` also the pre-ReLU fc7 activations (N, 4096) used by the cross-domain
        contrastive loss.
        """
        if self.verifier is None:
            raise ValueError(f"the {self.variant!r} MTDnet variant has no verification head; rank "
                             "its gallery by embedding distances")
        return self.verifier(maps_a, maps_b, return_fc7=return_fc7)

    def forward(self, images: Tensor) -> Tensor:
        """The L2-normalised ranking embedding (N, rank_dim) of ``images``."""
        return self.rank_embedding(self.trunk_features(images))

    def forward_triplets(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> TripletOutputs:
        """Embeddings and pair verification outputs for N triplets, one trunk pass for all 3N."""
        n = anchor.shape[0]
        if not anchor.shape == positive.shape == negative.shape:
            raise ValueError("anchor, positive and negative batches must have one shape, got "
                             f"{tuple(anchor.shape)}, {tuple(positive.shape)}, "
                             f"{tuple(negative.shape)}")
        maps = self.trunk_features(torch.cat([anchor, positive, negative]))
        emb: Sequence[Tensor | None] = (
            self.rank_embedding(maps).split(n) if self.has_ranking else (None, None, None))
        pos_logits = neg_logits = pos_fc7 = neg_fc7 = None
        if self.verifier is not None:
            ma, mp, mn = maps.split(n)
            logits, fc7 = self.verifier(torch.cat([ma, ma]), torch.cat([mp, mn]), return_fc7=True)
            pos_logits, neg_logits = logits.split(n)
            pos_fc7, neg_fc7 = fc7.split(n)
        return TripletOutputs(emb[0], emb[1], emb[2], pos_logits, neg_logits, pos_fc7, neg_fc7)


class MTDNetLoss(nn.Module):
    """MTDnet's objective: ``triplet_weight * triplet + verification_weight * verification``.

    The verification loss sees the positive pairs (a_i, p_i) labelled same and the negative pairs
    (a_i, n_i) labelled different. A term whose head the variant lacks is left out (``cls``: no
    triplet term; ``rnk``: no verification term); a weight of 0 also leaves its term out.
    Returns a dict with the terms computed and ``"total"``.
    """

    def __init__(self, triplet_weight: float = 1.0, verification_weight: float = 1.0,
                 margin: float = 1.0) -> None:
        super().__init__()
        self.triplet_weight = triplet_weight
        self.verification_weight = verification_weight
        self.margin = margin

    def forward(self, outputs: TripletOutputs) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.triplet_weight and outputs.anchor is not None:
            terms["triplet"] = squared_triplet_loss(
                outputs.anchor, outputs.positive, outputs.negative, margin=self.margin)
            total = self.triplet_weight * terms["triplet"]
        if self.verification_weight and outputs.pos_logits is not None:
            logits = torch.cat([outputs.pos_logits, outputs.neg_logits])
            n = outputs.pos_logits.shape[0]
            same = torch.cat([logits.new_ones(n), logits.new_zeros(n)])
            terms["verification"] = verification_loss(logits, same)
            weighted = self.verification_weight * terms["verification"]
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("MTDNetLoss has no term to compute: every weighted term's head is "
                             "missing from this variant or has weight 0")
        terms["total"] = total
        return terms


@dataclass
class CrossDomainOutputs:
    """A cross-domain step: the target's :class:`TripletOutputs` and the frozen source's fc7.

    From source triplets: the fc7 of their positive and negative pairs. From source pairs
    (:meth:`CrossDomainMTDNet.forward_source_pairs`): ``source_pos_fc7`` holds every pair's fc7,
    ``source_same`` their labels and ``source_neg_fc7`` is None.
    """

    target: TripletOutputs
    source_pos_fc7: Tensor
    source_neg_fc7: Tensor | None
    source_same: Tensor | None = None


class CrossDomainMTDNet(nn.Module):
    """MTDnet's cross-domain architecture: a trainable target and a frozen source network.

    The source (e.g. trained on CUHK03) is deep-copied, so passing one model as both arguments is
    safe; the copy has ``requires_grad=False`` and stays in eval mode whatever ``train()`` is
    called with. At test time use ``.target`` alone (``forward`` delegates to it); save
    ``.target`` as the trained model.
    """

    def __init__(self, target: MTDNet, source: MTDNet) -> None:
        super().__init__()
        for role, net in (("target", target), ("source", source)):
            if net.verifier is None:
                raise ValueError(f"the cross-domain architecture needs a verification head, but "
                                 f"the {role} network is the {net.variant!r} variant")
        self.target = target
        self.source = copy.deepcopy(source).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> CrossDomainMTDNet:
        super().train(mode)
        self.source.eval()
        return self

    def inference_model(self) -> MTDNet:
        """The network to evaluate, export or serve: the target (see ``model_spec``)."""
        return self.target

    def forward(self, images: Tensor) -> Tensor:
        """The target network's ranking embedding."""
        return self.target(images)

    def forward_triplets(
        self, target: Sequence[Tensor], source: Sequence[Tensor]
    ) -> CrossDomainOutputs:
        """Target outputs for target triplets (a, p, n) and source fc7 for source triplets."""
        outputs = self.target.forward_triplets(*target)
        anchor, positive, negative = source
        n = anchor.shape[0]
        with torch.no_grad():
            ma, mp, mn = self.source.trunk_features(torch.cat([anchor, positive, negative])).split(n)
            _, fc7 = self.source.verify_logits(torch.cat([ma, ma]), torch.cat([mp, mn]),
                                               return_fc7=True)
        pos_fc7, neg_fc7 = fc7.split(n)
        return CrossDomainOutputs(outputs, pos_fc7, neg_fc7)

    def forward_source_pairs(
        self, target: Sequence[Tensor], first: Tensor, second: Tensor, same: Tensor
    ) -> CrossDomainOutputs:
        """Target outputs for target triplets and source fc7 for labelled source pairs."""
        outputs = self.target.forward_triplets(*target)
        n = first.shape[0]
        with torch.no_grad():
            ma, mb = self.source.trunk_features(torch.cat([first, second])).split(n)
            _, fc7 = self.source.verify_logits(ma, mb, return_fc7=True)
        return CrossDomainOutputs(outputs, fc7, None, same)


class CrossDomainLoss(MTDNetLoss):
    """``triplet + verification + contrastive_weight * contrastive`` (all weights 1 in the paper).

    The contrastive term (margin 1) compares the L2-normalised pre-ReLU fc7 of target pairs with
    that of source pairs: similar when both pairs are positive or both negative. Source triplets
    pair each target pair with the source pairs of its index in both statuses
    (:func:`reidkit.losses.contrastive.cross_domain_contrastive_loss`); source pairs pair target
    pair ``k`` with source pair ``k mod N`` as the authors' prototxt does
    (:func:`reidkit.losses.contrastive.indexed_contrastive_loss`). Target and source batches
    must hold the same number of triplets / pairs.
    """

    def __init__(self, triplet_weight: float = 1.0, verification_weight: float = 1.0,
                 contrastive_weight: float = 1.0, margin: float = 1.0,
                 contrastive_margin: float = 1.0) -> None:
        super().__init__(triplet_weight, verification_weight, margin)
        self.contrastive_weight = contrastive_weight
        self.contrastive_margin = contrastive_margin

    def forward(self, outputs: CrossDomainOutputs) -> dict[str, Tensor]:  # type: ignore[override]
        terms = super().forward(outputs.target)
        t = outputs.target
        if outputs.source_same is not None:
            terms["contrastive"] = indexed_contrastive_loss(
                t.pos_fc7, t.neg_fc7, outputs.source_pos_fc7, outputs.source_same,
                margin=self.contrastive_margin)
        else:
            terms["contrastive"] = cross_domain_contrastive_loss(
                t.pos_fc7, t.neg_fc7, outputs.source_pos_fc7, outputs.source_neg_fc7,
                margin=self.contrastive_margin)
        terms["total"] = terms["total"] + self.contrastive_weight * terms["contrastive"]
        return terms


# Caffe initialisation ------------------------------------------------------------------------

# (weight std, bias) per layer, from the weight_filler / bias_filler of the authors' prototxts:
# Nets/MTDnet/train_val.prototxt (the multi-task network; "feat" is the ranking fc) and
# Nets/MTDnet-rnk/train_val.prototxt (the deep ranking network, AlexNet's 0.1 biases).
_CAFFE_FILLERS = {
    "mtdnet": {"conv1": (0.01, 0.0), "conv2": (0.01, 0.0), "conv3": (0.01, 0.0),
               "conv4": (0.01, 0.0), "conv5": (0.01, 0.0), "rank_fc": (0.005, 0.1),
               "fc6": (0.005, 0.0), "fc7": (0.005, 0.0), "fc8": (0.01, 0.0)},
    "rnk": {"conv1": (0.01, 0.0), "conv2": (0.01, 0.1), "conv3": (0.01, 0.0),
            "conv4": (0.01, 0.1), "conv5": (0.01, 0.1), "fc6": (0.005, 0.1),
            "fc7": (0.005, 0.1), "fc8": (0.005, 0.1)},
}


@torch.no_grad()
def caffe_init(model: MTDNet) -> None:
    """Gaussian weights and constant biases as the authors' prototxts fill them.

    A ResNet trunk keeps torchvision's initialisation (only the CaffeNet layers have fillers).
    """
    fillers = _CAFFE_FILLERS["rnk" if model.variant == "rnk" else "mtdnet"]
    for name, module in model.named_modules():
        layer = name.rsplit(".", 1)[-1]
        if layer not in fillers or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if name.startswith("trunk.") and model.config["trunk"] != "caffenet":
            continue
        std, bias = fillers[layer]
        nn.init.normal_(module.weight, 0.0, std)
        nn.init.constant_(module.bias, bias)


# ImageNet initialisation of the trunk --------------------------------------------------------

# Our CaffeNet trunk parameter -> names it has in common checkpoint layouts: BVLC caffemodels
# converted by name ("conv1.weight"), sequential ports of CaffeNet with LRN layers
# ("features.0" conv1, "features.4" conv2), the same without LRN modules ("features.3"), and a
# reidkit MTDnet file ("trunk.conv1.weight").
_CAFFENET_KEYS: dict[str, tuple[str, ...]] = {
    f"{layer}.{kind}": (f"{layer}.{kind}", *(f"features.{i}.{kind}" for i in idx),
                        f"trunk.{layer}.{kind}")
    for layer, idx in (("conv1", (0,)), ("conv2", (4, 3)))
    for kind in ("weight", "bias")
}


def load_trunk_weights(model: MTDNet, path: str | Path) -> list[str]:
    """Initialise ``model``'s trunk from an ImageNet checkpoint; returns the trunk keys loaded.

    ``path`` is a state dict in a ``.safetensors`` file or a ``.pth``/``.pt`` file (loaded with
    ``weights_only=True``; a ``{"state_dict": ...}`` wrapper and a ``module.`` prefix are
    accepted).

    * CaffeNet trunk: conv1 (96x3x11x11) and conv2 (256x48x5x5, group 2) from the BVLC
      ``bvlc_reference_caffenet`` weights converted to a PyTorch state dict (``bvlc_alexnet`` has
      the same shapes but normalises before pooling); see ``_CAFFENET_KEYS`` for the naming
      schemes recognised. Caffe's conv1 expects BGR input, which ``caffe_input=True`` provides.
      torchvision's ``alexnet`` (64/192 channels, no groups) is a different network and is
      refused.
    * ResNet trunks: a torchvision ResNet state dict of the same depth (``resnet50-*.pth``);
      conv1..layer3 are loaded, the 1x1 neck keeps its random initialisation.
    """
    return _load_trunk_state(model, read_state_dict(path), str(path))


# The deep ranking network (variant rnk) starts from all of CaffeNet: conv3-fc7 by name, or in a
# sequential port with LRN modules (features.8/10/12) or without (features.6/8/10).
_CAFFENET_HEAD_KEYS: dict[str, tuple[str, ...]] = {
    f"{layer}.{kind}": (f"{layer}.{kind}", *(f"features.{i}.{kind}" for i in idx),
                        f"rank_head.{layer}.{kind}")
    for layer, idx in (("conv3", (8, 6)), ("conv4", (10, 8)), ("conv5", (12, 10)),
                       ("fc6", ()), ("fc7", ()))
    for kind in ("weight", "bias")
}


def _load_trunk_state(model: MTDNet, state: Mapping[str, Tensor], source: str) -> list[str]:
    loaded = _load_trunk_only(model, state, source)
    if model.rank_head is None or model.config["trunk"] != "caffenet":
        return loaded
    # the rnk network is initialised from all of CaffeNet: its conv3-fc7 too, where the file has them
    own = model.rank_head.state_dict()
    found = {k: next(n for n in names if n in state) for k, names in _CAFFENET_HEAD_KEYS.items()
             if any(n in state for n in names)}
    wrong = [f"{k}: file {tuple(state[src].shape)} vs model {tuple(own[k].shape)}"
             for k, src in found.items() if state[src].shape != own[k].shape]
    if wrong:
        raise ValueError(f"weights in {source} do not fit the rnk network's conv3-fc7 "
                         f"({'; '.join(wrong[:4])}): CaffeNet's fc6 expects 227x227 input and "
                         "fc_width 4096")
    model.rank_head.load_state_dict({k: state[src] for k, src in found.items()}, strict=False)
    return sorted(loaded + [f"rank_head.{k}" for k in found])


def _load_trunk_only(model: MTDNet, state: Mapping[str, Tensor], source: str) -> list[str]:
    own = model.trunk.state_dict()
    if model.config["trunk"] == "caffenet":
        candidates = _CAFFENET_KEYS
        hint = ("CaffeNet needs conv1.weight 96x3x11x11 and conv2.weight 256x48x5x5 (group 2), "
                "i.e. the BVLC CaffeNet/AlexNet weights converted to PyTorch; torchvision's "
                "alexnet (64/192 channels, no groups) is not CaffeNet")
    else:
        candidates = {k: (k, f"trunk.{k}") for k in own if not k.startswith("neck.")}
        hint = f"the trunk is torchvision's {model.config['trunk']}; use that network's weights"
    mapping = {k: _find_key(state, names, k, source, hint) for k, names in candidates.items()}
    wrong = [f"{k}: file {tuple(state[src].shape)} vs model {tuple(own[k].shape)}"
             for k, src in mapping.items() if state[src].shape != own[k].shape]
    if wrong:
        raise ValueError(f"weights in {source} do not fit the MTDnet trunk "
                         f"({'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}): {hint}")
    model.trunk.load_state_dict({k: state[src] for k, src in mapping.items()}, strict=False)
    return sorted(mapping)


def _find_key(state: Mapping[str, Tensor], names: Sequence[str], param: str, source: str,
              hint: str) -> str:
    for name in names:
        if name in state:
            return name
    sample = ", ".join(list(state)[:6])
    raise ValueError(f"no weights for trunk parameter {param} in {source} (looked for "
                     f"{', '.join(names)}; the file has {sample}, ...): {hint}")
