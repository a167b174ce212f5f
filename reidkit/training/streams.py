"""Endless, resumable batch streams.

The dynamic scheme picks the sampler of every step, so the trainer draws from two streams (random
and identity-balanced) at different rates. Each stream remembers how many batches it has handed out;
with that count a resumed run rebuilds the stream and draws exactly the batch the killed run would
have drawn next. Augmentation is seeded per sample from (seed, stream, epoch, batch, slot), so the
images are identical too, whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reidkit.data.cache import BatchAugment, ImageCache


class BatchSampler(Protocol):
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[list[int]]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def set_start(self, batch_index: int) -> None: ...


def sample_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (and on their order)."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class _SeededBatches:
    """Batches of (index, seed) pairs, epoch after epoch, starting at (epoch, position)."""

    def __init__(self, sampler: BatchSampler, seed: int, stream_id: int, epoch: int, position: int):
        self.sampler, self.seed, self.stream_id = sampler, seed, stream_id
        self.epoch, self.position = epoch, position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, position = self.epoch, self.position
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(position)
            for offset, batch in enumerate(self.sampler):
                pos = position + offset
                yield [(int(idx), sample_seed(self.seed, self.stream_id, epoch, pos, slot))
                       for slot, idx in enumerate(batch)]
            epoch, position = epoch + 1, 0


class _SeededDataset(Dataset):
    """Reads ``dataset[index]`` under a private RNG seeded for that sample."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class BatchStream:
    """Draw batches forever from ``sampler`` over ``dataset``; ``state_dict`` says where it is."""

    def __init__(self, dataset: Dataset, sampler: BatchSampler, *, seed: int, stream_id: int,
                 num_workers: int = 0, pin_memory: bool = False):
        if len(sampler) == 0:
            raise ValueError("the sampler yields no batch: too few images or identities for the batch")
        self.dataset, self.sampler = dataset, sampler
        self.seed, self.stream_id = seed, stream_id
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch, self.position = 0, 0
        self._iterator: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._iterator is None:
            # a private generator: creating the loader must not draw from the global RNG, which
            # drives dropout and must replay identically after a resume
            batches = _SeededBatches(self.sampler, self.seed, self.stream_id, self.epoch, self.position)
            loader = DataLoader(_SeededDataset(self.dataset), batch_sampler=batches,  # type: ignore[arg-type]
                                num_workers=self.num_workers, pin_memory=self.pin_memory,
                                generator=torch.Generator().manual_seed(self.seed))
            self._iterator = iter(loader)
        batch = next(self._iterator)
        self.position += 1
        if self.position == len(self.sampler):
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    def __iter__(self) -> BatchStream:
        return self

    def close(self) -> None:
        """Stop the loader workers (the stream restarts them if drawn from again)."""
        self._iterator = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None


class CachedBatchStream:
    """:class:`BatchStream`'s interface over an :class:`ImageCache`: augmented batches on
    ``device`` as ``(images, pids, camids, indices)``, resumable from ``state_dict``."""

    def __init__(self, cache: ImageCache, sampler: Any, augment: BatchAugment, *, seed: int,
                 stream_id: int, device: torch.device) -> None:
        if len(sampler) == 0:
            raise ValueError("the sampler yields no batch: too few images or identities for the batch")
        self.cache, self.sampler, self.augment = cache, sampler, augment
        self.dataset = cache.dataset  # the trainer's unreadable-image check marks it
        self.seed, self.stream_id, self.device = seed, stream_id, device
        self.epoch, self.position = 0, 0
        self._batches: Iterator[list[int]] | None = None
        self._labels: tuple[torch.Tensor, torch.Tensor] | None = None

    def __iter__(self) -> CachedBatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._batches is None:
            self.sampler.set_epoch(self.epoch)
            self.sampler.set_start(self.position)
            self._batches = iter(self.sampler)
        indices = next(self._batches)
        generator = torch.Generator().manual_seed(
            sample_seed(self.seed, self.stream_id, self.epoch, self.position))
        self.position += 1
        if self.position == len(self.sampler):
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        index = torch.as_tensor(indices)
        images = self.cache.batch(indices)
        pids, camids = self._slot_labels()
        if self.device.type == "cuda":
            images = images.pin_memory()
        images = self.augment(images.to(self.device, non_blocking=True), generator)
        return images, pids[index], camids[index], index

    def _slot_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """pid and camid of the image each cache slot holds (a stand-in's for unreadable ones)."""
        if self._labels is None:
            records = [self.cache.dataset.records[i] for i in self.cache.source]
            self._labels = (torch.tensor([r.pid for r in records]),
                            torch.tensor([r.camid for r in records]))
        return self._labels

    def close(self) -> None:
        self._batches = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = None
