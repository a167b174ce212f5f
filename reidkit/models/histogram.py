"""Colour-histogram features: the classic learning-free re-ID baseline.

Each image is cut into horizontal stripes; each stripe gets a joint colour histogram (HSV or RGB)
normalised to sum 1 so that every stripe weighs the same; the stripes are concatenated and the
vector is L1- or L2-normalised. Euclidean distance on L2-normalised square-rooted histograms is
the Hellinger distance, which usually suits histograms best (``sqrt=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ImageLike = str | Path | np.ndarray | Image.Image


def _load(item: ImageLike) -> np.ndarray:
    if isinstance(item, str | Path):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist; check the path")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    arr = np.asarray(item)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {arr.dtype} "
                         f"{arr.shape}; convert with np.asarray(PIL.Image.open(p).convert('RGB'))")
    return arr


def _to_space(rgb: np.ndarray, space: str) -> np.ndarray:
    if space == "rgb":
        return rgb
    # PIL's HSV: hue, saturation and value each scaled to 0..255.
    return np.asarray(Image.fromarray(rgb).convert("HSV"))


def color_histogram_features(
    images: Sequence[ImageLike] | np.ndarray,
    bins: tuple[int, int, int] = (8, 4, 4),
    stripes: int = 6,
    space: str = "hsv",
    norm: str = "l2",
    sqrt: bool = False,
) -> np.ndarray:
    """Striped joint colour histograms of ``images``, float32 ``(N, stripes * prod(bins))``.

    ``images``: paths, PIL images, RGB uint8 arrays ``(H, W, 3)`` or one ``(N, H, W, 3)`` array.
    ``bins``: bins per channel (values 0..255 fall in bin ``v * b // 256``). ``stripes``: equal
    horizontal bands (rows split as ``np.array_split``). ``space``: "hsv" or "rgb". ``norm``: "l1"
    (sum 1) or "l2" (unit length) over the whole vector. ``sqrt``: take square roots of the stripe
    histograms first (Hellinger / power normalisation).
    """
    if space not in ("hsv", "rgb"):
        raise ValueError(f"space={space!r}: use 'hsv' or 'rgb'")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm={norm!r}: use 'l1' or 'l2'")
    if len(bins) != 3 or any(int(b) < 1 or int(b) > 256 for b in bins):
        raise ValueError(f"bins={bins}: give three bin counts in 1..256")
    if stripes < 1:
        raise ValueError(f"stripes={stripes} must be >= 1")
    b0, b1, b2 = (int(b) for b in bins)
    dim = b0 * b1 * b2
    feats = np.zeros((len(images), stripes * dim), np.float32)
    for i, item in enumerate(images):
        img = _to_space(_load(item), space).astype(np.int64)
        if img.shape[0] < stripes:
            raise ValueError(f"image {i} has {img.shape[0]} rows, fewer than stripes={stripes}")
        joint = ((img[..., 0] * b0 >> 8) * b1 + (img[..., 1] * b1 >> 8)) * b2 + (
            img[..., 2] * b2 >> 8)
        for s, rows in enumerate(np.array_split(joint, stripes, axis=0)):
            hist = np.bincount(rows.ravel(), minlength=dim).astype(np.float32)
            hist /= hist.sum()
            feats[i, s * dim:(s + 1) * dim] = np.sqrt(hist) if sqrt else hist
    if norm == "l1":
        feats /= feats.sum(axis=1, keepdims=True)
    else:
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats
