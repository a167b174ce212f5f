"""Feature files: the features of a set of images, with their labels and the model that made them.

A :class:`FeatureSet` is what ``reidkit extract`` writes and ``reidkit search`` / the HTTP service
read: an (N, D) float32 matrix, the N image paths, pids and camids, and ``meta`` naming the model
(its config, the sha256 of its file, input size, flip, distance metric, reidkit version), so that
queries are never compared with a gallery extracted by another model.

Two file formats, chosen by suffix; both load without unpickling anything:

* ``.safetensors``: ``features``, ``pids`` and ``camids`` as tensors; the paths (a JSON list) and
  ``meta`` (a JSON object) in the file's metadata, readable with any safetensors tool. The
  safetensors header is limited to 100 MB, about a million typical paths; use ``.npz`` beyond.
* ``.npz``: the three arrays, ``paths`` as a unicode array and ``meta`` as a JSON string.

Image (and video) paths are written relative to the feature file's folder when they lie inside it
and absolute otherwise, and read back as absolute paths, so a feature file works from any working
directory and a folder holding both images and features can be moved. Optional per-image columns
(the data set's own camera and identity names, and where a crop was seen in a video) travel in a
JSON ``rows`` entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from reidkit import __version__
from reidkit.data.dataset import ImageRecord, Sighting, camera_name, identity_name
from reidkit.data.loader import build_test_loader
from reidkit.errors import ReidkitError
from reidkit.evaluation.distance import FEATURE_METRICS, check_metric
from reidkit.models.inference import extract_features
from reidkit.models.io import atomic_write, load_model
from reidkit.progress import progress as progress_display

FORMAT = "reidkit-features/1"
SUFFIXES = (".safetensors", ".npz")
# safetensors refuses headers above 100,000,000 bytes; keep room for the rest of the header.
_MAX_HEADER_TEXT = 95_000_000
# meta entries that must agree between a query set and the gallery it is searched against.
_MODEL_IDENTITY = ("model_sha256", "input_size", "flip")
# header value saying that relative paths are relative to the feature file's folder; files without
# it (written before) hold paths relative to the working directory of `reidkit extract`.
_PATHS_BASE = "feature_file"
_MAX_PATHS_CHECKED = 20_000  # image existence checked on load: all, or this many spread evenly


class FeatureError(ReidkitError, ValueError):
    """Features that cannot be used as asked (files, mismatched sets, extraction settings)."""


class FeatureFileError(FeatureError):
    """A feature file that is not a reidkit feature file, or whose contents do not fit together."""


class UnknownModelError(FeatureError):
    """Features whose model is not recorded, compared where the model must be known."""


class MissingImagesWarning(UserWarning):
    """A feature file names images that are not on disk (pictures and the service cannot show them)."""


class UnknownModelWarning(UserWarning):
    """Features without model metadata used anyway (``allow_unknown_model``)."""


@dataclass
class FeatureSet:
    """Features (N, D) float32 of N images with their ``paths``, ``pids`` and ``camids`` (int64).

    ``meta`` is a JSON-serialisable dict; :func:`extract_feature_set` fills ``model_config``,
    ``model_sha256``, ``model_file``, ``input_size`` ([h, w]), ``flip``, ``metric`` and
    ``reidkit_version``. Arrays are converted to those dtypes; lengths must agree.

    Optional columns, one entry per image (None where unknown): ``cameras`` and ``identities``,
    the data set's own camera and person names, and ``sightings``, where a video crop was seen.
    """

    features: np.ndarray
    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    cameras: list[str | None] | None = None
    identities: list[str | None] | None = None
    sightings: list[Sighting | None] | None = None
    source: str | None = field(default=None, compare=False)  # the file it was loaded from

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.pids = np.ascontiguousarray(self.pids, dtype=np.int64)
        self.camids = np.ascontiguousarray(self.camids, dtype=np.int64)
        self.paths = [str(p) for p in self.paths]
        if self.features.ndim != 2:
            raise ValueError(f"features must be a 2-D (num_images, feature_dim) array, got shape "
                             f"{self.features.shape}")
        n = len(self.features)
        sizes = {"paths": len(self.paths), "pids": self.pids.shape, "camids": self.camids.shape}
        if sizes != {"paths": n, "pids": (n,), "camids": (n,)}:
            raise ValueError(f"a feature set needs one path, pid and camid per feature row: {n} rows "
                             f"but {', '.join(f'{k} {v}' for k, v in sizes.items())}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")
        for name in ("cameras", "identities", "sightings"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"a feature set needs one entry of {name} per feature row: {n} rows "
                                 f"but {len(column)} {name}")

    def select(self, cameras: Sequence[str] | None = None, time_from: float | None = None,
               time_to: float | None = None) -> np.ndarray | None:
        """Boolean mask of the images seen by one of ``cameras`` (names, as :meth:`camera_label`
        gives them) within [``time_from``, ``time_to``] seconds; None when nothing is filtered.

        A time bound keeps only images with a sighting (crops from video).
        """
        if not cameras and time_from is None and time_to is None:
            return None
        mask = np.ones(len(self), dtype=bool)
        if cameras:
            wanted = set(cameras)
            mask &= np.array([self.camera_label(i) in wanted for i in range(len(self))], dtype=bool)
        if time_from is not None or time_to is not None:
            times = np.array([np.nan if self.sightings is None or self.sightings[i] is None
                              else self.sightings[i].time for i in range(len(self))])
            with np.errstate(invalid="ignore"):
                mask &= ~np.isnan(times)
                if time_from is not None:
                    mask &= times >= time_from
                if time_to is not None:
                    mask &= times <= time_to
        return mask

    def records(self) -> list[ImageRecord]:
        """The images as records, with their names and sightings."""
        return [ImageRecord(p, int(pid), int(cam),
                            self.cameras[i] if self.cameras is not None else None,
                            self.identities[i] if self.identities is not None else None,
                            self.sightings[i] if self.sightings is not None else None)
                for i, (p, pid, cam) in enumerate(zip(self.paths, self.pids, self.camids, strict=True))]

    def describe(self, i: int) -> dict[str, Any]:
        """Image ``i`` for people and JSON: path, pid, camid, the data set's camera and person
        names, and for a crop from video its video, frame, time (s), box and tracklet."""
        out: dict[str, Any] = {"path": self.paths[i], "pid": int(self.pids[i]),
                               "camid": int(self.camids[i]), "camera": self.camera_label(i),
                               "identity": self.identity_label(i)}
        s = self.sightings[i] if self.sightings is not None else None
        if s is not None:
            out.update(video=s.video, frame=s.frame, time=s.time, box=list(s.box), score=s.score,
                       tracklet=s.tracklet)
        return out

    def camera_label(self, i: int) -> str:
        """How image ``i``'s camera is named to people: its own name, else its camera index."""
        name = self.cameras[i] if self.cameras is not None else None
        return name if name is not None else str(int(self.camids[i]))

    def identity_label(self, i: int) -> str | None:
        """How image ``i``'s person is named to people: its own name, else its pid; None if unknown."""
        name = self.identities[i] if self.identities is not None else None
        if name is not None:
            return name
        return str(int(self.pids[i])) if self.pids[i] >= 0 else None

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        """The feature dimension D."""
        return self.features.shape[1]


def check_known_model(fs: FeatureSet, name: str, *, allow_unknown_model: bool = False) -> None:
    """Refuse features whose ``meta`` does not record the model that made them.

    With ``allow_unknown_model`` they are accepted with an :class:`UnknownModelWarning` instead.
    """
    if "model_sha256" in fs.meta:
        return
    message = (f"{name} does not record the model that made its features (it was not written by "
               "`reidkit extract`), so nothing checks that it matches the model or the other features")
    if not allow_unknown_model:
        raise UnknownModelError(f"{message}; re-extract it with `reidkit extract`, or pass "
                                "--allow-unknown-model (allow_unknown_model=True) to use it anyway")
    warnings.warn(f"{message}; using it anyway (allow_unknown_model)", UnknownModelWarning,
                  stacklevel=2)


def extract_to_file(model_path: str | Path, records: Sequence[ImageRecord], out: str | Path, *,
                    rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None,
                    **options: Any) -> FeatureSet | None:
    """Extract ``records`` into the feature file ``out``, split across ``world_size`` processes.

    Each rank extracts its contiguous share and writes it as a shard beside ``out``; after
    ``barrier`` rank 0 joins the shards in order into ``out`` and removes them, so the file equals
    a one-process extraction. Returns the whole set on rank 0, None on the others. ``options`` go
    to :func:`extract_feature_set`.
    """
    out = Path(out)
    if world_size == 1:
        fs = extract_feature_set(model_path, records, **options)
        save_features(out, fs)
        return fs
    n = len(records)
    shards = [out.with_name(f"{out.stem}.rank{r}-of-{world_size}{out.suffix}") for r in range(world_size)]
    part = records[rank * n // world_size:(rank + 1) * n // world_size]
    save_features(shards[rank], extract_feature_set(model_path, part, **options))
    barrier()
    whole = None
    if rank == 0:
        whole = concat_feature_sets([load_features(s, check_images=False) for s in shards])
        save_features(out, whole)
        for shard in shards:
            shard.unlink()
    barrier()
    return whole


def concat_feature_sets(parts: Sequence[FeatureSet]) -> FeatureSet:
    """One feature set of ``parts`` in order (the shards of a distributed extraction); the parts
    must come from one model and extraction (equal ``meta``)."""
    if not parts:
        raise FeatureError("no feature sets to join")
    if any(p.meta != parts[0].meta for p in parts[1:]):
        raise FeatureError("feature sets made by different models or extractions cannot be joined")

    def column(name: str) -> list | None:
        values = [getattr(p, name) for p in parts]
        if all(v is None for v in values):
            return None
        return [x for p, v in zip(parts, values, strict=True) for x in (v or [None] * len(p))]

    return FeatureSet(np.concatenate([p.features for p in parts]),
                      [path for p in parts for path in p.paths],
                      np.concatenate([p.pids for p in parts]), np.concatenate([p.camids for p in parts]),
                      dict(parts[0].meta), column("cameras"), column("identities"), column("sightings"))


def check_same_model(query: FeatureSet, gallery: FeatureSet, *,
                     allow_unknown_model: bool = False) -> None:
    """Raise ``ValueError`` unless both sets were extracted alike (model file, input size, flip).

    A set without model metadata (made outside reidkit) raises :class:`UnknownModelError`, or with
    ``allow_unknown_model`` warns, and its missing entries are not compared.
    """
    check_known_model(query, query.source or "the query feature set",
                      allow_unknown_model=allow_unknown_model)
    check_known_model(gallery, gallery.source or "the gallery feature set",
                      allow_unknown_model=allow_unknown_model)
    if query.dim != gallery.dim:
        raise FeatureError(f"query features are {query.dim}-d but gallery features are "
                         f"{gallery.dim}-d; extract both with the same model")
    differ = [f"{key}: {query.meta[key]!r} vs {gallery.meta[key]!r}" for key in _MODEL_IDENTITY
              if key in query.meta and key in gallery.meta and query.meta[key] != gallery.meta[key]]
    if differ:
        raise FeatureError("query and gallery features were extracted differently ("
                         + "; ".join(differ) + "); re-extract one of them with the other's settings")


def save_features(path: str | Path, fs: FeatureSet) -> None:
    """Write ``fs`` to ``path`` (``.safetensors`` or ``.npz``, by suffix), atomically.

    Relative paths in ``fs`` are taken relative to the working directory; see the module docstring.
    """
    path = Path(path)
    fmt = _format_of(path)
    try:
        meta_text = json.dumps(fs.meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FeatureSet.meta must be JSON-serialisable: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    stored_paths = [_portable(p, base) for p in fs.paths]
    rows_text = json.dumps(_rows_to_json(fs, base), ensure_ascii=False)
    arrays = {"features": fs.features, "pids": fs.pids, "camids": fs.camids}
    if fmt == ".safetensors":
        from safetensors.numpy import save_file

        paths_text = json.dumps(stored_paths, ensure_ascii=False)
        if len(paths_text.encode()) + len(meta_text.encode()) + len(rows_text.encode()) > _MAX_HEADER_TEXT:
            raise FeatureFileError(f"{len(fs)} paths are too many for a safetensors header (100 MB at "
                             f"most); save to a .npz file instead")
        metadata = {"format": FORMAT, "paths": paths_text, "meta": meta_text, "rows": rows_text,
                    "paths_base": _PATHS_BASE}
        atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))
    else:
        # np.str_ arrays of a fixed width: loadable with allow_pickle=False, unlike object arrays.
        paths = np.array(stored_paths, dtype=np.str_) if stored_paths else np.zeros(0, dtype="<U1")

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
                np.savez(fh, format=np.array(FORMAT), paths=paths, meta=np.array(meta_text),
                         rows=np.array(rows_text), paths_base=np.array(_PATHS_BASE), **arrays)

        atomic_write(path, write)


def load_features(path: str | Path, *, check_images: bool = True) -> FeatureSet:
    """Read a feature file written by :func:`save_features`; its image paths come back absolute.

    Raises ``FileNotFoundError`` for a missing file and :class:`FeatureFileError` for a file that
    is not a reidkit feature file or whose arrays do not fit together. With ``check_images`` a
    :class:`MissingImagesWarning` says how many of the images it names are not on disk.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist; write one with "
                                "`reidkit extract`")
    try:
        if fmt == ".safetensors":
            arrays, header = _read_safetensors(path)
        else:
            arrays, header = _read_npz(path)
        paths = json.loads(header["paths"]) if fmt == ".safetensors" else header["paths"]
        # Old files hold paths relative to the working directory of `extract`: keep those as they are.
        base = os.path.dirname(os.path.abspath(path)) if header.get("paths_base") == _PATHS_BASE else None
        paths = [_absolute(p, base) for p in paths]
        rows = json.loads(header["rows"]) if header.get("rows") else {}
        fs = FeatureSet(arrays["features"], paths, arrays["pids"], arrays["camids"],
                        json.loads(header["meta"]), source=str(path), **_rows_from_json(rows, base))
    except FeatureFileError:
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise FeatureFileError(f"{path} is not a valid reidkit feature file: {exc}") from None
    if check_images:
        _warn_missing_images(fs, path)
    return fs


def _portable(p: str, base: str) -> str:
    """``p`` relative to ``base`` when it lies inside it, else absolute."""
    full = os.path.abspath(p)
    return os.path.relpath(full, base) if os.path.commonpath([full, base]) == base else full


def _absolute(p: str, base: str | None) -> str:
    return p if base is None or os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def _rows_to_json(fs: FeatureSet, base: str) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    if fs.cameras is not None:
        rows["cameras"] = fs.cameras
    if fs.identities is not None:
        rows["identities"] = fs.identities
    if fs.sightings is not None:
        rows["sightings"] = [None if s is None else
                             [_portable(s.video, base), s.camera, s.frame, s.time, *s.box, s.score,
                              s.tracklet]
                             for s in fs.sightings]
    return rows


def _rows_from_json(rows: dict[str, Any], base: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"cameras": rows.get("cameras"), "identities": rows.get("identities")}
    if rows.get("sightings") is not None:
        out["sightings"] = [
            None if r is None else Sighting(video=_absolute(r[0], base), camera=r[1], frame=int(r[2]),
                                            time=float(r[3]), box=tuple(int(v) for v in r[4:8]),
                                            score=float(r[8]), tracklet=int(r[9]))
            for r in rows["sightings"]]
    return out


def _warn_missing_images(fs: FeatureSet, path: Path) -> None:
    if not fs.paths:
        return
    step = max(1, len(fs.paths) // _MAX_PATHS_CHECKED)
    checked = fs.paths[::step]
    missing = [p for p in checked if not os.path.isfile(p)]
    if missing:
        of = f"{len(checked):,} checked" if step > 1 else f"{len(checked):,}"
        warnings.warn(
            f"{len(missing):,} of the {of} images named in {path} are missing (first: {missing[0]}); "
            "pictures and the search service cannot show them: put the images back where they "
            "were extracted from, or re-extract the features", MissingImagesWarning, stacklevel=2)


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            header = fh.metadata() or {}
            if header.get("format") != FORMAT:
                raise FeatureFileError(f"{path} is a safetensors file but not a reidkit feature "
                                       "file (no feature metadata); write one with `reidkit extract`")
            arrays = {key: fh.get_tensor(key) for key in ("features", "pids", "camids")}
    except SafetensorError as exc:
        raise FeatureFileError(f"{path} is not a readable safetensors file: {exc}") from None
    return arrays, header


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not zipfile.is_zipfile(path):  # numpy would call a text file "pickled data"
        raise FeatureFileError(f"{path} is not an .npz archive (a zip of arrays); write feature "
                               "files with `reidkit extract`")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FeatureFileError(f"{path} is not a readable .npz file: {exc}") from None
    with archive:
        if "format" not in archive.files or str(archive["format"]) != FORMAT:
            raise FeatureFileError(f"{path} is an .npz file but not a reidkit feature file; write "
                                   "one with `reidkit extract`")
        arrays = {key: archive[key] for key in ("features", "pids", "camids")}
        header: dict[str, Any] = {"paths": archive["paths"].tolist(), "meta": str(archive["meta"])}
        for key in ("rows", "paths_base"):
            if key in archive.files:
                header[key] = str(archive[key])
        return arrays, header


def _format_of(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise FeatureFileError(f"feature files end in {' or '.join(SUFFIXES)}; got {path.name!r}")
    return path.suffix


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_feature_set(
    model_path: str | Path,
    records: Sequence[ImageRecord],
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    flip: bool = False,
    device: str = "cpu",
    progress: bool = True,
    metric: str = "euclidean",
) -> FeatureSet:
    """Features of ``records`` from the model file ``model_path``, in the records' order.

    ``height``/``width`` default to the input size stored in the model file. Images are resized
    and normalised as the model's spec says, as at evaluation time.
    ``flip`` averages each feature with that of the mirrored image. ``metric`` is recorded in
    ``meta`` as the distance to search these features with.
    """
    check_metric(metric, FEATURE_METRICS)
    model = load_model(model_path, map_location=device)
    spec = model.spec
    if (height is None) != (width is None) and spec.input_size is not None:  # one side given
        height, width = height or spec.input_size[0], width or spec.input_size[1]
    try:
        spec.check_embedding()
        size = spec.resolve_size(None if height is None or width is None else (height, width))
    except ReidkitError as exc:
        raise FeatureError(f"{model_path}: {exc}") from None
    loader = build_test_loader(records, spec.test_transform(size), batch_size, num_workers)
    with progress_display(Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("extracting features", total=len(loader.dataset))
        features = extract_features(model, loader, device, flip=flip,
                                    on_batch=lambda n: bar.advance(task, n))
    meta = {
        "model_config": model.config,
        "model_sha256": file_sha256(model_path),
        "model_file": Path(model_path).name,
        "input_size": list(size),
        "flip": flip,
        "metric": metric,
        "reidkit_version": __version__,
    }
    sightings = [r.sighting for r in records]
    return FeatureSet(features, [r.path for r in records], np.array([r.pid for r in records]),
                      np.array([r.camid for r in records]), meta,
                      cameras=[camera_name(r) for r in records],
                      identities=[identity_name(r) for r in records],
                      sightings=sightings if any(s is not None for s in sightings) else None)
