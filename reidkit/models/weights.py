"""Pretrained backbone weights: local .pth or .safetensors files, or torchvision's download URLs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
)

from reidkit.errors import ReidkitError

# The ImageNet weights the re-ID literature starts from (V1: the ones the papers used).
IMAGENET_WEIGHTS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
}

Pretrained = str | Path | bool | None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a PyTorch file (``torch.save``).

    Training checkpoints that wrap the weights under ``"state_dict"`` and ``nn.DataParallel``'s
    ``module.`` prefix are unwrapped, so the usual checkpoint layouts load as they are.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass the path of a torchvision .pth state dict "
            "or a .safetensors file"
        )
    try:
        if path.suffix == ".safetensors":
            obj = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the readers raise many types for a corrupt or foreign file
        raise ValueError(
            f"cannot read {path} as a state dict ({type(e).__name__}: {e}); expected a file "
            "written by torch.save(model.state_dict()) or safetensors"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def download_imagenet_weights(arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """Fetch torchvision's ImageNet weights for ``arch`` (cached under ``$TORCH_HOME``)."""
    if arch not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights known for {arch!r}; known: {', '.join(IMAGENET_WEIGHTS)}")
    url = IMAGENET_WEIGHTS[arch].url
    file_name = url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash a RuntimeError
        raise RuntimeError(
            f"could not download the ImageNet weights of {arch} from {url} ({e}). Download that "
            f"file on a machine with internet access and pass the local file instead: "
            f"model.pretrained=/path/{file_name} in a reidkit config or on the command line, "
            f"build_model(..., pretrained='/path/{file_name}') in Python"
        ) from e


def resolve_pretrained(arch: str, pretrained: Pretrained) -> dict[str, torch.Tensor] | None:
    """The state dict ``pretrained`` asks for: None/False none, True torchvision's, a path that file."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return download_imagenet_weights(arch)
    if isinstance(pretrained, str | Path):
        return read_state_dict(pretrained)
    raise TypeError(f"pretrained must be a file path, True or None, not {type(pretrained).__name__}")


class WeightsMismatchError(ReidkitError, ValueError):
    """Weights whose names or shapes do not fit the module they are loaded into."""


def load_weights(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    ignore_prefixes: tuple[str, ...] = ("fc.",),
    assign: bool = False,
    hint: str = "pass weights of the same architecture (e.g. resnet50 weights for backbone='resnet50')",
) -> None:
    """Load ``state_dict`` into ``module`` strictly, naming the mismatched keys if it does not fit.

    Keys under ``ignore_prefixes`` (the ImageNet classifier) are dropped first. BatchNorm's
    ``num_batches_tracked`` may be absent, as it is in torchvision's older weight files.
    ``assign`` makes the module take the given tensors (cast to its dtypes) instead of copying
    them, which is how a module built on the meta device gets real weights. ``hint`` ends the
    error message: what to do about it.
    """
    expected = module.state_dict()
    given = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(
        k for k in expected.keys() - given.keys() if not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(given.keys() - expected.keys())
    wrong_shape = sorted(
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected.keys() & given.keys()
        if given[k].shape != expected[k].shape
    )
    problems = [
        f"{len(keys)} {what}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong_shape),
        )
        if keys
    ]
    if problems:
        raise WeightsMismatchError(
            f"weights from {source} do not fit {type(module).__name__}: {'; '.join(problems)}; "
            f"{hint}"
        )
    if assign:
        given = {k: v.to(expected[k].dtype) for k, v in given.items()}
    module.load_state_dict(given, strict=False, assign=assign)
