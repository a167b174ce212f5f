"""The image Dataset over :class:`ImageRecord` lists, the feature-extraction loader, and a check
that finds unreadable images before a long job starts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from reidkit.data.dataset import ImageRecord
from reidkit.data.image import ImageReadError, check_image, read_image
from reidkit.errors import ReidkitError

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


class UnreadableImagesError(ReidkitError, ValueError):
    """Images found unreadable before a job, when the job was asked to stop on them (strict)."""


class Unreadable(NamedTuple):
    """An image that cannot be read, and why."""

    path: str
    reason: str


def check_records(records: Sequence[ImageRecord], threads: int = 4
                  ) -> tuple[list[ImageRecord], list[Unreadable]]:
    """Split ``records`` into the readable ones (in order) and the unreadable images.

    Reads every file (see :func:`reidkit.data.image.check_image`) in ``threads`` threads, since
    decoding releases the GIL; each distinct path is checked once.
    """
    paths = list(dict.fromkeys(r.path for r in records))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = dict(zip(paths, pool.map(check_image, paths), strict=True))
    kept = [r for r in records if reasons[r.path] is None]
    return kept, [Unreadable(p, reason) for p, reason in reasons.items() if reason is not None]


class _ReportingDataset(Dataset):
    """``dataset[i]``, or an :class:`Unreadable` for an image that cannot be read.

    A worker process cannot raise :class:`ImageReadError` to the caller intact (the DataLoader
    turns it into a ``RuntimeError`` holding the worker's traceback), so it returns the failure.
    """

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except ImageReadError as err:
            return Unreadable(err.path, err.reason)


def _collate(samples: list[Any]) -> Any:
    bad = next((s for s in samples if isinstance(s, Unreadable)), None)
    return bad if bad is not None else default_collate(samples)


class _TestLoader(DataLoader):
    """A DataLoader that raises a clean :class:`ImageReadError` in the caller for a bad image."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, Unreadable):
                raise ImageReadError(batch.path, f"{batch.reason}; remove or replace the file")
            yield batch


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
    would silently attach another image's feature to its position. The error is an
    :class:`ImageReadError` naming the file, with or without worker processes; use
    :func:`check_records` first to leave such images out.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    dataset = ImageDataset(records, transform, on_error=on_error)
    return _TestLoader(
        _ReportingDataset(dataset),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
    )
