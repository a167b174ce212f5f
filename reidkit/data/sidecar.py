"""The sidecar table of crops cut from video: one row per crop file, saying where and when it was seen.

``reidkit ingest`` writes ``sightings.csv`` at the root of its output folder, beside the crop
folders. Columns: ``path`` (the crop, relative to that root), ``video``, ``camera`` (the camera's
name), ``camid`` (1-based, as the ``_c<n>`` of the crop's name), ``frame``, ``time`` (seconds),
``x1 y1 x2 y2`` (the box in frame pixels), ``score`` (detector confidence), ``tracklet``.
:func:`attach_sightings` gives the records of a loaded data set their :class:`Sighting`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from reidkit.data.dataset import ImageRecord, Sighting
from reidkit.errors import ReidkitError

SIDECAR = "sightings.csv"
COLUMNS = ("path", "video", "camera", "camid", "frame", "time", "x1", "y1", "x2", "y2", "score",
           "tracklet")


class SidecarError(ReidkitError, ValueError):
    """A sidecar table that cannot be read."""


def sighting_row(path: str, camid: int, s: Sighting) -> dict[str, object]:
    """The sidecar row of the crop ``path`` (relative to the output root) of camera ``camid``."""
    x1, y1, x2, y2 = s.box
    return {"path": path, "video": s.video, "camera": s.camera, "camid": camid, "frame": s.frame,
            "time": f"{s.time:.3f}", "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "score": f"{s.score:.4f}", "tracklet": s.tracklet}


def write_rows(fh, rows: Iterable[dict[str, object]], header: bool) -> None:
    """Append ``rows`` to an open text file, with the header line first when ``header``."""
    writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)


def read_sightings(root: str | Path) -> dict[str, tuple[int, Sighting]]:
    """``{crop path relative to root: (camid, sighting)}`` from ``root/sightings.csv``; {} if none."""
    path = Path(root) / SIDECAR
    if not path.is_file():
        return {}
    out: dict[str, tuple[int, Sighting]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise SidecarError(f"{path} lacks the columns {sorted(missing)}; it is not a sidecar "
                               "written by `reidkit ingest` (re-run the ingest)")
        for line, row in enumerate(reader, start=2):
            try:
                sighting = Sighting(
                    video=row["video"], camera=row["camera"], frame=int(row["frame"]),
                    time=float(row["time"]),
                    box=(int(row["x1"]), int(row["y1"]), int(row["x2"]), int(row["y2"])),
                    score=float(row["score"]), tracklet=int(row["tracklet"]))
                out[os.path.normpath(row["path"])] = (int(row["camid"]), sighting)
            except (TypeError, ValueError) as exc:
                raise SidecarError(f"{path} line {line} is malformed ({exc}); re-run the ingest "
                                   "into a new folder") from None
    return out


def attach_sightings(records: Sequence[ImageRecord], root: str | Path) -> list[ImageRecord]:
    """``records`` with the sighting and camera name of every crop that the sidecar lists.

    The sidecar is looked for in ``root`` and, for a crop folder loaded by itself, in its parent.
    """
    root = Path(root)
    if not (root / SIDECAR).is_file() and (root.parent / SIDECAR).is_file():
        root = root.parent
    table = read_sightings(root)
    if not table:
        return list(records)
    base = os.path.abspath(root)
    out = []
    for r in records:
        entry = table.get(os.path.relpath(os.path.abspath(r.path), base))
        if entry is None:
            out.append(r)
        else:
            out.append(r._replace(sighting=entry[1], camera=entry[1].camera))
    return out
