"""The common shape of every re-ID data set: train / query / gallery lists of image records."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Sighting:
    """Where and when a crop cut from a video was seen: what the footage sidecar table records.

    ``video`` is the video file, ``camera`` the camera's name, ``frame`` the 0-based frame index,
    ``time`` seconds from the start of the video, ``box`` (x1, y1, x2, y2) in frame pixels,
    ``score`` the detector's confidence and ``tracklet`` the tracklet the crop belongs to.
    """

    video: str
    camera: str
    frame: int
    time: float
    box: tuple[int, int, int, int]
    score: float
    tracklet: int


class ImageRecord(NamedTuple):
    """One image: its file path, identity label and camera index (both 0-based ints).

    Optional: ``camera`` and ``identity``, the data set's own names for the camera and the person
    (``"6"`` for a ``_c6`` file, ``"alice"`` for a folder ``alice/``), and ``sighting`` for crops
    cut from a video. They are shown to people; ``pid`` and ``camid`` are what evaluation uses.
    """

    path: str
    pid: int
    camid: int
    camera: str | None = None
    identity: str | None = None
    sighting: Sighting | None = None


@dataclass
class ReIDDataset:
    """A data set ready for training and evaluation.

    Training pids are relabelled 0..num_train_pids-1; query and gallery keep the original ids so
    that distractors (pid 0) stay non-matching. ``split``/``num_splits`` describe data sets with
    several evaluation splits (VIPeR, CUHK01, ...); single-split data sets have ``num_splits == 1``.
    """

    name: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    split: int = 0
    num_splits: int = 1
    notes: list[str] = field(default_factory=list)
    val: list[ImageRecord] = field(default_factory=list)  # an official validation list, if any

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def summary(self) -> dict[str, dict[str, int]]:
        """Identity, image and camera counts per subset (what `reidkit datasets stats` prints)."""
        return {
            name: {
                "ids": len({r.pid for r in records}),
                "images": len(records),
                "cams": len({r.camid for r in records}),
            }
            for name, records in (("train", self.train), ("query", self.query),
                                  ("gallery", self.gallery))
        }

    def carve_validation(
        self, num_pids: int, seed: int = 0
    ) -> tuple[ReIDDataset, list[ImageRecord], list[ImageRecord]]:
        """Hold out ``num_pids`` training identities as a validation query/gallery split.

        Model selection uses this split, never the test set. Per held-out identity one image per
        camera goes to the validation query and the rest to its gallery. Returns the reduced
        training set (pids relabelled 0..N-1 again) and the validation query and gallery.
        """
        pids = sorted({r.pid for r in self.train})
        if not 0 < num_pids < len(pids):
            raise ValueError(
                f"cannot hold out {num_pids} of {len(pids)} training identities for validation"
            )
        held = set(np.random.default_rng(seed).choice(pids, size=num_pids, replace=False).tolist())
        kept = [r for r in self.train if r.pid not in held]
        val_query: list[ImageRecord] = []
        val_gallery: list[ImageRecord] = []
        # without camera ids (one camera for all), one image per identity is the query
        one_camera = len({r.camid for r in self.train}) == 1
        seen: set[object] = set()
        for r in self.train:
            if r.pid not in held:
                continue
            key = r.pid if one_camera else (r.pid, r.camid)
            if key in seen:
                val_gallery.append(r)
            else:
                seen.add(key)
                val_query.append(r)
        if one_camera:  # each validation image its own camera, so no match is removed
            val_gallery = [r._replace(camid=i) for i, r in enumerate(val_gallery)]
            val_query = [r._replace(camid=len(val_gallery) + i) for i, r in enumerate(val_query)]
        reduced = ReIDDataset(self.name, relabel(kept), self.query, self.gallery,
                              self.split, self.num_splits, list(self.notes))
        return reduced, val_query, val_gallery


def relabel(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Map the pids of ``records`` to 0..N-1 in sorted order of the original ids."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [r._replace(pid=mapping[r.pid]) for r in records]


_CAMERA_IN_NAME = re.compile(r"_c(\d{1,9})(?!\d)", re.ASCII)


def camera_name(record: ImageRecord) -> str | None:
    """The data set's own name of the record's camera: ``record.camera``, else the ``<n>`` of a
    ``_c<n>`` in the file name (Market-1501, DukeMTMC-reID and MSMT17 name cameras so), else None."""
    if record.camera is not None:
        return record.camera
    m = _CAMERA_IN_NAME.search(os.path.basename(record.path))
    return m.group(1) if m else None


def identity_name(record: ImageRecord) -> str | None:
    """The data set's own name of the record's person: ``record.identity``, else the pid as written
    (query and gallery keep the original ids), else None for an unknown person (pid < 0)."""
    if record.identity is not None:
        return record.identity
    return str(record.pid) if record.pid >= 0 else None
