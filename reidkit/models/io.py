"""Model files: weights in safetensors with the model's JSON config in the file's metadata.

One file is enough to rebuild and run a trained model, and loading it never unpickles anything.
Writes are atomic (temporary file + rename), so a crash never leaves a half-written model behind;
a kill can leave the temporary file, which :func:`remove_stale_temporaries` deletes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from reidkit.errors import ReidkitError
from reidkit.models.spec import ModelSpec, model_spec, restore_preprocessing
from reidkit.models.weights import WeightsMismatchError, load_weights

FORMAT = "reidkit-model/1"
TEMP_SUFFIX = ".tmp"


class CheckpointError(ReidkitError, ValueError):
    """A model file that is missing, unreadable, or made for another model."""


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the finished file onto ``path`` in one rename.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path``, created with the permissions
    the user's umask gives new files (as ``open`` would), which the rename keeps.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(tmp.stat().st_mode)  # 0o666 less the umask, without changing the umask
    try:
        write(str(tmp))
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors) make it 0600
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path, names: Iterable[str] = ()) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    Removes every ``.<name>.<random>.tmp``, and for the file ``names`` given also the
    ``.<name>.<random>`` files of reidkit versions before the ``.tmp`` suffix. Returns the removed
    paths. Call it only when no other process writes into ``folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    old = "|".join(re.escape(n) for n in names)
    pattern = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX)
                         + (rf"|\.(?:{old})\.[A-Za-z0-9_]{{8}}" if old else ""))
    removed = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def save_model(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights and ``model.config`` to ``path``, with ``extra`` metadata and the
    preprocessing of its spec (input size, interpolation), which :func:`load_model` restores."""
    module = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    extra = {**model_spec(module).preprocessing(), **(extra or {})}
    meta = {"format": FORMAT, "config": json.dumps(module.config), "extra": json.dumps(extra)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_model_meta(path: str | Path, expect: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (model config, extra metadata) stored in a model file, without loading weights.

    ``expect`` lists config entries the caller relies on (e.g. ``{"name": "pyramid",
    "num_classes": 751}``); a file made for anything else is refused with a message naming both.
    """
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a reidkit model file (safetensors): {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has no reidkit model metadata; was it written by reidkit?")
    config = json.loads(meta["config"])
    for key, want in (expect or {}).items():
        if config.get(key) != want:
            raise CheckpointError(
                f"{path} holds a model with {key}={config.get(key)!r}, but {key}={want!r} is needed"
            )
    return config, json.loads(meta.get("extra", "{}"))


def read_model_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of the model stored at ``path``, without reading its weights."""
    from reidkit.models import build_model

    config, extra = read_model_meta(path)
    model = build_model(**{**config, "pretrained": None})
    restore_preprocessing(model, extra)
    return model.spec


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               expect: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the model stored at ``path`` and load its weights, and the input size and
    interpolation it was trained with into its ``spec``. ``expect``: see :func:`read_model_meta`.
    """
    from reidkit.models import build_model

    config, extra = read_model_meta(path, expect)
    if "pretrained" in config:  # the stored weights replace any ImageNet initialisation
        config = {**config, "pretrained": None}
    model = build_model(**config)
    try:
        load_weights(model, load_file(str(_existing(path)), device=str(map_location)),
                     source=str(path), ignore_prefixes=(),
                     hint="the file's weights were saved from another version of this model")
    except WeightsMismatchError as exc:
        raise CheckpointError(str(exc)) from None
    restore_preprocessing(model, extra)
    return model.to(map_location).eval()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    return path
