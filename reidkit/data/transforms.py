"""Train and test image transforms: PIL image in, normalised float tensor (3, H, W) out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    height: int,
    width: int,
    *,
    train: bool,
    flip_p: float = 0.5,
    pad: int = 10,
    erase_p: float = 0.5,
    erase_max_area: float = 0.33,
    erase_value: Literal["mean", "random"] = "mean",
    interpolation: Literal["bilinear", "bicubic"] = "bilinear",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the transform that turns an RGB PIL image into a float tensor of shape (3, H, W).

    Test: resize to ``(height, width)`` (``interpolation``, antialiased), scale to [0, 1],
    normalise. Train adds, in this order: horizontal flip with probability ``flip_p``;
    zero-padding by ``pad`` pixels and a random ``(height, width)`` crop (translation jitter); and
    after normalisation random erasing with probability ``erase_p`` (Zhong et al.: area 2 % to
    ``erase_max_area`` of the image, aspect 0.3-3.3; the Pyramid release erases up to 40 %).
    ``erase_value="mean"`` fills the rectangle with the mean colour (0 after normalisation,
    ``mean`` without it), as the Pyramid release does; ``"random"`` fills it with standard-normal
    noise. Steps with probability or size 0 are left out. ``normalize=False`` keeps
    values in [0, 1] (MTDnet uses no mean subtraction). Randomness comes from torch's global
    generator, so ``torch.manual_seed`` makes the output reproducible.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    for name, p in (("flip_p", flip_p), ("erase_p", erase_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if not 0.02 < erase_max_area <= 1.0:
        raise ValueError(f"erase_max_area must be in (0.02, 1], got {erase_max_area}")
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    if erase_value not in ("mean", "random"):
        raise ValueError(f"erase_value must be 'mean' or 'random', got {erase_value!r}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values (RGB) with std > 0, got {mean}, {std}")

    steps: list[Callable] = [
        v2.Resize((height, width), interpolation=InterpolationMode(interpolation), antialias=True)
    ]
    if train and flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(flip_p))
    if train and pad > 0:
        steps += [v2.Pad(pad, fill=0), v2.RandomCrop((height, width))]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if normalize:
        steps.append(v2.Normalize(list(mean), list(std)))
    if train and erase_p > 0:
        fill: float | list[float] | str = (
            "random" if erase_value == "random" else 0.0 if normalize else list(mean)
        )
        steps.append(v2.RandomErasing(p=erase_p, scale=(0.02, erase_max_area), ratio=(0.3, 3.3),
                                      value=fill))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)
