"""Train/test transforms: shapes, exact normalisation, flip, pad-crop, erasing, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

H, W = 16, 8
RGB = (200, 100, 50)


def constant_image(height=40, width=20, colour=RGB):
    return Image.fromarray(np.full((height, width, 3), colour, np.uint8))


def gradient_image(height=H, width=W):
    """Every pixel different, so flips and shifts are visible."""
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3) % 251
    return Image.fromarray(values.astype(np.uint8))


def normalised(colour=RGB):
    stats = zip(colour, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    return torch.tensor([(c / 255 - m) / s for c, m, s in stats])


@pytest.mark.parametrize("train", [False, True])
def test_output_shape_and_dtype(train):
    x = build_transforms(H, W, train=train)(constant_image(37, 23))
    assert type(x) is torch.Tensor
    assert x.shape == (3, H, W) and x.dtype == torch.float32


def test_constant_image_normalises_to_hand_computed_values():
    # (200/255 - 0.485) / 0.229 = 1.30705, (100/255 - 0.456) / 0.224 = -0.28501, ...
    x = build_transforms(H, W, train=False)(constant_image())
    torch.testing.assert_close(x.mean(dim=(1, 2)), normalised(), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised(), torch.tensor([1.30705, -0.28501, -0.93298]),
                               atol=1e-5, rtol=0)
    raw = build_transforms(H, W, train=False, normalize=False)(constant_image())
    torch.testing.assert_close(raw.mean(dim=(1, 2)), torch.tensor(RGB) / 255, atol=1e-6, rtol=0)


def test_custom_mean_and_std():
    x = build_transforms(H, W, train=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))(
        constant_image(colour=(255, 0, 51)))
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, -2.0, -0.3]), atol=1e-6, rtol=0)


def test_flip_probability_one_and_zero():
    img = gradient_image()
    test = build_transforms(H, W, train=False)(img)
    flipped = build_transforms(H, W, train=True, flip_p=1.0, pad=0, erase_p=0.0)(img)
    kept = build_transforms(H, W, train=True, flip_p=0.0, pad=0, erase_p=0.0)(img)
    assert torch.equal(flipped, test.flip(-1))
    assert torch.equal(kept, test)


def test_random_flip_is_deterministic_under_manual_seed():
    img = gradient_image()
    t = build_transforms(H, W, train=True, flip_p=0.5, pad=0, erase_p=0.0)
    test = build_transforms(H, W, train=False)(img)
    outcomes = []
    for seed in range(12):
        torch.manual_seed(seed)
        first = t(img)
        torch.manual_seed(seed)
        assert torch.equal(first, t(img))
        outcomes.append(torch.equal(first, test.flip(-1)))
        assert outcomes[-1] or torch.equal(first, test)
    assert any(outcomes) and not all(outcomes)


def test_full_train_pipeline_is_deterministic_under_manual_seed():
    t = build_transforms(H, W, train=True, flip_p=0.2, erase_p=0.5)
    img = gradient_image(30, 14)
    torch.manual_seed(5)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(5)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(a[0], x) for x in a[1:])


def test_pad_and_crop_is_a_shifted_window_of_the_zero_padded_image():
    pad = 3
    img = gradient_image()  # already H x W: the resize is the identity
    test = build_transforms(H, W, train=False, normalize=False)(img)
    padded = torch.nn.functional.pad(test, (pad, pad, pad, pad))
    t = build_transforms(H, W, train=True, flip_p=0.0, pad=pad, erase_p=0.0, normalize=False)
    offsets = set()
    torch.manual_seed(0)
    for _ in range(40):
        x = t(img)
        match = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(x, padded[:, dy:dy + H, dx:dx + W])]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 10


@pytest.mark.parametrize("normalize", [True, False])
def test_erasing_fills_a_rectangle_with_the_mean_colour(normalize):
    t = build_transforms(H * 4, W * 4, train=True, flip_p=0.0, pad=0, erase_p=1.0,
                         normalize=normalize)
    image_value = normalised() if normalize else torch.tensor(RGB) / 255
    fill = torch.zeros(3) if normalize else torch.tensor(IMAGENET_MEAN)
    torch.manual_seed(1)
    for _ in range(10):
        x = t(constant_image())
        erased = (x - fill[:, None, None]).abs().amax(0) < 1e-6
        kept = (x - image_value[:, None, None]).abs().amax(0) < 1e-5
        assert torch.all(erased ^ kept)
        rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert erased.sum() == box  # one solid rectangle
        assert 0.02 <= erased.float().mean() <= 0.34


def test_random_erasing_value_is_noise():
    t = build_transforms(H * 4, W * 4, train=True, flip_p=0.0, pad=0, erase_p=1.0,
                         erase_value="random")
    torch.manual_seed(2)
    x = t(constant_image())
    changed = (x - normalised()[:, None, None]).abs().amax(0) > 1e-5
    assert changed.any()
    assert x[:, changed].std() > 0.5


def test_test_transform_ignores_train_only_options():
    img = gradient_image(30, 14)
    a = build_transforms(H, W, train=False)(img)
    b = build_transforms(H, W, train=False, flip_p=1.0, pad=5, erase_p=1.0)(img)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"height": 0}, "height"),
    ({"flip_p": 1.5}, "flip_p"),
    ({"erase_p": -0.1}, "erase_p"),
    ({"pad": -1}, "pad"),
    ({"erase_value": "zero"}, "erase_value"),
    ({"std": (0.2, 0.0, 0.2)}, "std"),
    ({"mean": (0.5, 0.5)}, "mean"),
])
def test_bad_arguments_raise(kwargs, match):
    args = {"height": H, "width": W, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_transforms(args.pop("height"), args.pop("width"), train=True, **args)


def test_erased_area_stays_within_erase_max_area():
    # the Pyramid release erases 2 % to 40 % of the image (data.erase_max_area)
    transform = build_transforms(100, 50, train=True, flip_p=0, pad=0, erase_p=1.0,
                                 erase_max_area=0.4)
    image = constant_image(100, 50)
    torch.manual_seed(0)
    areas = [float((transform(image) == 0).all(dim=0).float().mean()) for _ in range(300)]
    # rectangle sides are rounded to whole pixels: allow a pixel row/column of slack
    assert min(areas) >= 0.015 and max(areas) <= 0.42
    assert max(areas) > 0.3  # the larger areas are drawn too (the old bound was 0.33)


def test_bicubic_resize_is_torchvision_bicubic():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    image = gradient_image(50, 30)
    out = build_transforms(H, W, train=False, normalize=False, interpolation="bicubic")(image)
    expected = TF.to_dtype(TF.to_image(TF.resize(image, [H, W], InterpolationMode.BICUBIC,
                                                 antialias=True)), torch.float32, scale=True)
    torch.testing.assert_close(out, expected)
    bilinear = build_transforms(H, W, train=False, normalize=False)(image)
    assert not torch.equal(out, bilinear)
