"""A training input path that keeps a GPU busy: images decoded once, augmented in batches.

PIL decoding and per-image augmentation in a few loader workers cannot feed a GPU training a
ResNet-50 at 384x128 (torchreid #395: loading took 0.090 of 0.148 s per iteration). Here the
training images are decoded once into a uint8 array at the training size (:class:`ImageCache`, in
memory or a memory-mapped ``.npy`` file that later runs reuse), and flip, zero-pad + random crop,
normalisation and random erasing run as tensor operations on whole batches on the training device
(:class:`BatchAugment`), drawn from the same distributions as
:func:`reidkit.data.transforms.build_transforms`. The trainer draws batches through
:class:`reidkit.training.streams.CachedBatchStream`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidkit.data.loader import ImageDataset
from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

_ERASE_ATTEMPTS = 10  # torchvision's RandomErasing tries 10 rectangles, then erases nothing


class ImageCache:
    """uint8 images (N, 3, H, W) of ``records`` resized to the training size, decoded once.

    With ``folder`` the array is a memory-mapped ``.npy`` file there, named by a hash of the
    image paths, size and interpolation, and reused by later runs (Market-1501 at 384x128 is
    1.9 GB); without it the array lives in memory. Unreadable images follow
    :class:`ImageDataset`'s rule: the next readable image stands in, and ``source[i]`` is the
    record whose image slot ``i`` holds (its pid labels the slot).
    """

    def __init__(self, dataset: ImageDataset, height: int, width: int, interpolation: str = "bicubic",
                 folder: str | Path | None = None, num_workers: int = 0) -> None:
        self.dataset, self.size = dataset, (height, width)
        self.interpolation, self.folder, self.num_workers = interpolation, folder, num_workers
        self._array: np.ndarray | None = None
        self._source: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        return self._opened()[0]

    @property
    def source(self) -> np.ndarray:
        return self._opened()[1]

    def _opened(self) -> tuple[np.ndarray, np.ndarray]:
        """The image array and its slot sources, built or opened on first use."""
        if self._array is None or self._source is None:
            self._array, self._source = self._load()
        return self._array, self._source

    def __len__(self) -> int:
        return len(self.dataset)

    def key(self) -> str:
        text = "\n".join([*(r.path for r in self.dataset.records), str(self.size), self.interpolation])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(self.dataset), 3, *self.size)
        if self.folder is None:
            array = np.empty(shape, np.uint8)
            return array, self._fill(array)
        path = Path(self.folder) / f"images_{self.size[0]}x{self.size[1]}_{self.key()}.npy"
        source_path = path.with_name(path.stem + "_source.npy")
        if path.is_file() and source_path.is_file():
            cached = np.load(path, mmap_mode="r")
            if cached.shape == shape and cached.dtype == np.uint8:
                return cached, np.load(source_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        source = self._fill(array)
        array.flush()
        del array
        np.save(source_path, source)
        tmp.replace(path)  # a killed build leaves no half-written cache under the real name
        return np.load(path, mmap_mode="r"), source

    def _fill(self, array: np.ndarray) -> np.ndarray:
        """Decode every image into ``array``; returns the record index each slot holds."""
        resize = build_transforms(*self.size, train=False, normalize=False,
                                  interpolation=self.interpolation)  # type: ignore[arg-type]
        to_uint8 = _Uint8(resize)
        decoded = ImageDataset(self.dataset.records, to_uint8, on_error=self.dataset.on_error)
        decoded.failed_paths = set(self.dataset.failed_paths)
        loader = DataLoader(decoded, batch_size=64, num_workers=self.num_workers)  # in order
        source = np.empty(len(array), np.int64)
        start = 0
        for images, _, _, index in loader:
            array[start:start + len(images)] = images.numpy()
            source[start:start + len(images)] = index.numpy()
            start += len(images)
        return source

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The uint8 images at ``indices`` as a tensor (B, 3, H, W)."""
        return torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(indices)]))


class _Uint8:
    """A float [0, 1] transform's output as uint8 (picklable for loader workers)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        return (self.transform(image) * 255).round().to(torch.uint8)


class BatchAugment:
    """Flip, zero-pad + random crop, normalisation and random erasing of uint8 batches.

    The same distributions as :func:`reidkit.data.transforms.build_transforms`'s training
    transform: each image flipped with ``flip_p``; padded by ``pad`` and cropped at a uniform
    offset; scaled to [0, 1] and normalised; erased with ``erase_p`` by a rectangle of area
    uniform in [2 %, ``erase_max_area``] of the image and log-uniform aspect in [0.3, 3.3] (up to
    10 tries for one that fits, as torchvision does), filled with the mean colour (0 after
    normalisation).
    """

    def __init__(self, *, flip_p: float = 0.5, pad: int = 0, erase_p: float = 0.0,
                 erase_max_area: float = 0.4, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, normalize: bool = True) -> None:
        self.flip_p, self.pad, self.erase_p, self.erase_max_area = flip_p, pad, erase_p, erase_max_area
        self.mean, self.std, self.normalize = tuple(mean), tuple(std), normalize

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device -> float32 (B, 3, H, W) on the same device."""
        b, _, h, w = images.shape
        device = images.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(device)

        if self.flip_p > 0:
            flip = uniform(b) < self.flip_p
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if self.pad > 0:
            images = self._pad_crop(images, generator)
        x = images.float().div_(255)
        if self.normalize:
            mean = torch.tensor(self.mean, device=device)[None, :, None, None]
            std = torch.tensor(self.std, device=device)[None, :, None, None]
            x = (x - mean) / std
        if self.erase_p > 0:  # the mean colour: 0 after normalisation
            fill = 0.0 if self.normalize else torch.tensor(self.mean, device=device)[None, :, None, None]
            x = torch.where(self._erase_mask(b, h, w, generator).to(device)[:, None], fill, x)
        return x

    def _pad_crop(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        p = self.pad
        padded = torch.nn.functional.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        channel = torch.arange(3, device=images.device)[None, :, None, None]
        return padded[batch, channel, rows, cols]

    def _erase_mask(self, b: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """(B, H, W) bool: the erased rectangle of each image (all False when not erased)."""
        area = h * w * (0.02 + (self.erase_max_area - 0.02) * torch.rand(b, _ERASE_ATTEMPTS,
                                                                        generator=generator))
        log_ratio = math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(
            b, _ERASE_ATTEMPTS, generator=generator)
        ratio = log_ratio.exp()
        eh = (area * ratio).sqrt().round().long()
        ew = (area / ratio).sqrt().round().long()
        fits = (eh < h) & (ew < w)
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((b,), -1))
        erase = (torch.rand(b, generator=generator) < self.erase_p) & (first >= 0)
        pick = first.clamp_min(0)[:, None]
        eh, ew = eh.gather(1, pick)[:, 0], ew.gather(1, pick)[:, 0]
        top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
        r, c = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        inside = ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None])
                  & (c >= left[:, None, None]) & (c < (left + ew)[:, None, None]))
        return inside & erase[:, None, None]
