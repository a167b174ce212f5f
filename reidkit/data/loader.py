"""The image Dataset over :class:`ImageRecord` lists, and the feature-extraction loader."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reidkit.data.dataset import ImageRecord
from reidkit.data.image import ImageReadError, read_image

log = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]


class ImageDataset(Dataset):
    """Images of ``records`` as ``(image_tensor, pid, camid, index)``.

    With ``on_error="skip"`` an image that cannot be read is logged once (by path), remembered in
    ``failed_paths`` and replaced by the next readable record (wrapping around), so one bad file
    does not end a long run; the returned pid, camid and index are those of the image actually
    returned. ``on_error="raise"`` re-raises the :class:`ImageReadError`. When no record can be
    read a ``RuntimeError`` says so. With ``DataLoader`` workers each worker keeps its own
    ``failed_paths`` (and logs its own warnings).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        on_error: OnError = "skip",
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.records = list(records)
        if not self.records:
            raise ValueError("no image records given; check the data set root and split")
        self.transform = transform
        self.on_error = on_error
        self.failed_paths: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for offset in range(n):
            i = (index + offset) % n
            record = self.records[i]
            if record.path in self.failed_paths:
                continue
            try:
                image = read_image(record.path)
            except ImageReadError as err:
                if self.on_error == "raise":
                    raise
                self.failed_paths.add(record.path)
                log.warning("skipping unreadable image %s (%s); using the next readable one",
                            record.path, err.reason)
                continue
            return self.transform(image), record.pid, record.camid, i
        raise RuntimeError(
            f"none of the {n} images could be read (e.g. {self.records[index % n].path}); "
            "check that the data set root points at the extracted image files"
        )


def build_test_loader(
    records: Sequence[ImageRecord],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    num_workers: int = 0,
    *,
    on_error: OnError = "raise",
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over ``records`` in their order, keeping the last partial batch (for features).

    ``on_error`` defaults to ``"raise"`` here: substituting an unreadable query or gallery image
    would silently attach another image's feature to its position.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return DataLoader(
        ImageDataset(records, transform, on_error=on_error),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
