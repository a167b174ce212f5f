"""Model files: weights in safetensors with the model's JSON config in the file's metadata.

One file is enough to rebuild and run a trained model, and loading it never unpickles anything.
Writes are atomic (temporary file + rename), so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "reidkit-model/1"


class CheckpointError(ValueError):
    """A model file that is missing, unreadable, or made for another model."""


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the finished file onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights and ``model.config`` (plus ``extra`` metadata) to ``path``."""
    module = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(module.config), "extra": json.dumps(extra or {})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_model_meta(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (model config, extra metadata) stored in a model file, without loading weights."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a reidkit model file (safetensors): {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has no reidkit model metadata; was it written by reidkit?")
    return json.loads(meta["config"]), json.loads(meta.get("extra", "{}"))


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               expect: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the model stored at ``path`` and load its weights.

    ``expect`` lists config entries the caller relies on (e.g. ``{"name": "pyramid",
    "num_classes": 751}``); a file made for anything else is refused with a message naming both.
    """
    from reidkit.models import build_model

    config, _ = read_model_meta(path)
    for key, want in (expect or {}).items():
        if config.get(key) != want:
            raise CheckpointError(
                f"{path} holds a model with {key}={config.get(key)!r}, but {key}={want!r} is needed"
            )
    if "pretrained" in config:  # the stored weights replace any ImageNet initialisation
        config = {**config, "pretrained": None}
    model = build_model(**config)
    load_weights(model, load_file(str(_existing(path)), device=str(map_location)), source=str(path))
    return model.to(map_location).eval()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a readable error listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("shape mismatch", shapes)) if keys]
        raise CheckpointError(f"weights in {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    return path
