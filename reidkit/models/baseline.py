"""Global-pooling baseline with a BN neck (the "bag of tricks" strong baseline), for comparisons."""

from __future__ import annotations

from torch import Tensor, nn

from reidkit.models.backbones import ResNetBackbone
from reidkit.models.base import ReIDModel, TrainOutput, check_num_classes
from reidkit.models.weights import Pretrained


class GlobalBaseline(ReIDModel):
    """Backbone -> global average pooling -> BN neck -> bias-free identity classifier.

    It shares the backbone, the output contract and the config of :class:`Pyramid`, but not its
    head: a one-stripe Pyramid reduces to 128 dims and feeds the same feature to both losses,
    whereas the BN neck keeps the C-dim pooled feature for the triplet loss (``TrainOutput.
    features``, before BN) and classifies and retrieves with its batch-normalised version (the
    ``eval()`` output, C = 2048 for ResNet-50).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pretrained: Pretrained = None,
        normalize_features: bool = False,
    ) -> None:
        num_classes = check_num_classes("baseline", num_classes)
        net = ResNetBackbone(backbone, last_stride=last_stride, pretrained=pretrained)
        super().__init__(
            config={"name": "baseline", "num_classes": num_classes, "backbone": backbone,
                    "last_stride": last_stride, "normalize_features": normalize_features},
            feature_dim=net.out_channels,
            normalize_features=normalize_features,
        )
        self.backbone = net
        self.neck = nn.BatchNorm1d(net.out_channels)
        self.neck.bias.requires_grad_(False)  # a shift-free neck: the classifier sees a centred feature
        self.classifier = nn.Linear(net.out_channels, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: Tensor) -> TrainOutput | Tensor:
        pooled = self.backbone(x).mean(dim=(2, 3))
        neck = self.neck(pooled)
        if not self.training:
            return self._eval_features(neck)
        return TrainOutput([self.classifier(neck)], pooled)
