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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from reidkit import __version__
from reidkit.data.dataset import ImageRecord
from reidkit.data.loader import build_test_loader
from reidkit.data.transforms import build_transforms
from reidkit.models.inference import extract_features
from reidkit.models.io import atomic_write, load_model, read_model_meta
from reidkit.retrieval.search import METRICS

FORMAT = "reidkit-features/1"
SUFFIXES = (".safetensors", ".npz")
# safetensors refuses headers above 100,000,000 bytes; keep room for the rest of the header.
_MAX_HEADER_TEXT = 95_000_000
# meta entries that must agree between a query set and the gallery it is searched against.
_MODEL_IDENTITY = ("model_sha256", "input_size", "flip")


class FeatureFileError(ValueError):
    """A feature file that is not a reidkit feature file, or whose contents do not fit together."""


@dataclass
class FeatureSet:
    """Features (N, D) float32 of N images with their ``paths``, ``pids`` and ``camids`` (int64).

    ``meta`` is a JSON-serialisable dict; :func:`extract_feature_set` fills ``model_config``,
    ``model_sha256``, ``model_file``, ``input_size`` ([h, w]), ``flip``, ``metric`` and
    ``reidkit_version``. Arrays are converted to those dtypes; lengths must agree.
    """

    features: np.ndarray
    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

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

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        """The feature dimension D."""
        return self.features.shape[1]


def check_same_model(query: FeatureSet, gallery: FeatureSet) -> None:
    """Raise ``ValueError`` unless both sets were extracted alike (model file, input size, flip).

    Entries missing from either ``meta`` (features made outside reidkit) are not compared.
    """
    if query.dim != gallery.dim:
        raise ValueError(f"query features are {query.dim}-d but gallery features are "
                         f"{gallery.dim}-d; extract both with the same model")
    differ = [f"{key}: {query.meta[key]!r} vs {gallery.meta[key]!r}" for key in _MODEL_IDENTITY
              if key in query.meta and key in gallery.meta and query.meta[key] != gallery.meta[key]]
    if differ:
        raise ValueError("query and gallery features were extracted differently ("
                         + "; ".join(differ) + "); re-extract one of them with the other's settings")


def save_features(path: str | Path, fs: FeatureSet) -> None:
    """Write ``fs`` to ``path`` (``.safetensors`` or ``.npz``, by suffix), atomically."""
    path = Path(path)
    fmt = _format_of(path)
    try:
        meta_text = json.dumps(fs.meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FeatureSet.meta must be JSON-serialisable: {exc}") from None
    arrays = {"features": fs.features, "pids": fs.pids, "camids": fs.camids}
    if fmt == ".safetensors":
        from safetensors.numpy import save_file

        paths_text = json.dumps(fs.paths, ensure_ascii=False)
        if len(paths_text.encode()) + len(meta_text.encode()) > _MAX_HEADER_TEXT:
            raise ValueError(f"{len(fs)} paths are too many for a safetensors header (100 MB at "
                             f"most); save to a .npz file instead")
        metadata = {"format": FORMAT, "paths": paths_text, "meta": meta_text}
        atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))
    else:
        # np.str_ arrays of a fixed width: loadable with allow_pickle=False, unlike object arrays.
        paths = np.array(fs.paths, dtype=np.str_) if fs.paths else np.zeros(0, dtype="<U1")

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
                np.savez(fh, format=np.array(FORMAT), paths=paths, meta=np.array(meta_text), **arrays)

        atomic_write(path, write)


def load_features(path: str | Path) -> FeatureSet:
    """Read a feature file written by :func:`save_features`.

    Raises ``FileNotFoundError`` for a missing file and :class:`FeatureFileError` for a file that
    is not a reidkit feature file or whose arrays do not fit together.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist; write one with "
                                "`reidkit extract`")
    try:
        if fmt == ".safetensors":
            arrays, paths, meta = _read_safetensors(path)
        else:
            arrays, paths, meta = _read_npz(path)
        return FeatureSet(arrays["features"], paths, arrays["pids"], arrays["camids"], meta)
    except FeatureFileError:
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise FeatureFileError(f"{path} is not a valid reidkit feature file: {exc}") from None


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
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
    return arrays, json.loads(header["paths"]), json.loads(header["meta"])


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FeatureFileError(f"{path} is not a readable .npz file: {exc}") from None
    with archive:
        if "format" not in archive.files or str(archive["format"]) != FORMAT:
            raise FeatureFileError(f"{path} is an .npz file but not a reidkit feature file; write "
                                   "one with `reidkit extract`")
        arrays = {key: archive[key] for key in ("features", "pids", "camids")}
        return arrays, archive["paths"].tolist(), json.loads(str(archive["meta"]))


def _format_of(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"feature files end in {' or '.join(SUFFIXES)}; got {path.name!r}")
    return path.suffix


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_input_size(height: int | None, width: int | None, config: dict[str, Any],
                       extra: dict[str, Any], source: str | Path) -> tuple[int, int]:
    """(height, width) to feed a model: given values, else the model file's recorded input size."""
    stored = extra.get("input_size") or config.get("input_size")
    if height is None or width is None:
        if stored is None:
            raise ValueError(f"{source} does not record its input size; pass height and width "
                             "(e.g. 384 and 128 for Pyramid)")
        height = stored[0] if height is None else height
        width = stored[1] if width is None else width
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    return int(height), int(width)


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
    and normalised as at evaluation time (no mean subtraction for Caffe-input MTDnet models).
    ``flip`` averages each feature with that of the mirrored image. ``metric`` is recorded in
    ``meta`` as the distance to search these features with.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    config, extra = read_model_meta(model_path)
    size = resolve_input_size(height, width, config, extra, model_path)
    model = load_model(model_path, map_location=device)
    transform = build_transforms(*size, train=False, normalize=not config.get("caffe_input", False))
    loader = build_test_loader(records, transform, batch_size, num_workers)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("extracting features", total=len(loader.dataset))
        features = extract_features(model, loader, device, flip=flip,
                                    on_batch=lambda n: bar.advance(task, n))
    meta = {
        "model_config": config,
        "model_sha256": file_sha256(model_path),
        "model_file": Path(model_path).name,
        "input_size": list(size),
        "flip": flip,
        "metric": metric,
        "reidkit_version": __version__,
    }
    return FeatureSet(features, [r.path for r in records], np.array([r.pid for r in records]),
                      np.array([r.camid for r in records]), meta)
