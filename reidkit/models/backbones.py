"""ResNet trunks with torchvision's parameter names, so torchvision ImageNet state dicts load as is."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck

from reidkit.models.weights import Pretrained, load_weights, resolve_pretrained

ARCHITECTURES: dict[str, Callable[..., tvm.ResNet]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
}


class ResNetBackbone(nn.Module):
    """A ResNet up to ``layer4``: maps (B, 3, H, W) images to the (B, C, H/s, W/s) feature map.

    ``s`` is 32, or 16 with ``last_stride=1`` (the re-ID habit: a taller map for part pooling at the
    same cost in parameters). ``out_channels`` is C: 512 for ResNet-18/34, 2048 for ResNet-50/101.
    ``pretrained``: None/False for random weights, True for torchvision's ImageNet download, or the
    path of a torchvision ``.pth`` state dict / ``.safetensors`` file.
    """

    def __init__(self, arch: str = "resnet50", last_stride: int = 2,
                 pretrained: Pretrained = None) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown backbone {arch!r}; known: {', '.join(ARCHITECTURES)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, not {last_stride!r}")
        state_dict = resolve_pretrained(arch, pretrained)
        # With weights to load, build on the meta device: initialising them first is wasted work.
        with torch.device("meta") if state_dict is not None else contextlib.nullcontext():
            net = ARCHITECTURES[arch](weights=None)
        if last_stride == 1:
            _unstride(net.layer4[0])
        self.arch = arch
        self.last_stride = last_stride
        self.out_channels: int = net.fc.in_features
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        if state_dict is not None:
            source = str(pretrained) if pretrained is not True else f"torchvision's {arch}"
            load_weights(self, state_dict, source=source, assign=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _unstride(block: BasicBlock | Bottleneck) -> None:
    """Set the stride of a down-sampling residual block to 1 (weights keep their shapes)."""
    strided = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    strided.stride = (1, 1)
    block.downsample[0].stride = (1, 1)

