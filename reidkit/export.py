"""ONNX export of trained models, checked against PyTorch with onnxruntime.

Parts (``part=``), each an ONNX graph with a dynamic batch axis and fixed image size:

* ``"features"``: the model's eval-mode retrieval feature, ``images (N, 3, H, W) -> features
  (N, D)``: Pyramid's 2,688-d concatenation, the baseline's pooled feature, MTDnet's embedding.
* ``"rank"``: the same graph as ``"features"`` with its output named ``embedding``, MTDnet's name
  for its ranking task (the trunk and the ranking head, L2-normalised, ``(N, rank_dim)``).
* ``"verify"`` (MTDnet): ``images_a, images_b (N, 3, H, W) -> same_probability (N,)``, the
  probability that ``images_a[i]`` and ``images_b[i]`` show one person, averaged over the
  8 passes of the paper's test protocol (each image as is or mirrored, both input orders) --
  the score :func:`reidkit.retrieval.pair_ranking.pair_score_matrix` ranks by. Images in, not trunk
  maps, so the file is all a deployment needs and cannot be fed maps of another trunk.

Images are given as the model expects them: ImageNet-normalised for Pyramid and ResNet MTDnet,
RGB in [0, 1] for the Caffe-input MTDnet (which converts to BGR 0-255 inside the graph).

Export uses PyTorch's ``torch.export``-based exporter (it needs ``onnxscript``); the parity check
runs onnxruntime on the CPU. All three come with the ``onnx`` extra:
``pip install 'reidkit[onnx]'``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from reidkit import __version__
from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.losses.verification import same_probability
from reidkit.models.io import atomic_write, load_model
from reidkit.models.spec import InputSizeError, NoEmbeddingError, inference_model, model_spec

Part = Literal["features", "rank", "verify"]
PARTS = ("features", "rank", "verify")
PARITY_BATCH_SIZES = (2, 3)  # two sizes: the second proves the batch axis is really dynamic


class ExportOptionError(ReidkitError, ValueError):
    """An export option that does not fit the model (part, input size, output name, tolerance)."""


class ExportParityError(ReidkitError, RuntimeError):
    """The exported graph's outputs differ from PyTorch's by more than the tolerance."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how closely it matches PyTorch.

    ``max_abs_diff`` is the largest absolute difference between onnxruntime and PyTorch outputs
    over random batches of ``batch_sizes`` images (None when the check was skipped).
    """

    path: Path
    part: str
    opset: int
    input_size: tuple[int, int]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_abs_diff: float | None
    atol: float
    batch_sizes: tuple[int, ...]


class _PairScore(nn.Module):
    """MTDnet's 8-pass "same person" probability of image pairs (a_i, b_i), as one graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images_a: Tensor, images_b: Tensor) -> Tensor:
        n = images_a.shape[0]
        maps = self.model.trunk_features(
            torch.cat([images_a, images_a.flip(-1), images_b, images_b.flip(-1)]))
        a, a_m, b, b_m = maps.unflatten(0, (4, n)).unbind(0)
        # (a, b), (b, a), (a', b), (b, a'), (a, b'), (b', a), (a', b'), (b', a')
        first = torch.cat([a, b, a_m, b, a, b_m, a_m, b_m])
        second = torch.cat([b, a, b, a_m, b_m, a, b_m, a_m])
        probs = same_probability(self.model.verify_logits(first, second))
        return probs.unflatten(0, (8, n)).mean(dim=0)


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"ONNX export needs {module}: pip install 'reidkit[onnx]' "
                                     "(or pip install onnx onnxruntime onnxscript)") from None


def _graph(model: nn.Module, part: str) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...]]:
    """The module to export for ``part``, with its input and output names."""
    if part not in PARTS:
        raise ExportOptionError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    spec = model_spec(model)
    variant = model.config.get("variant")
    what = f"this {model.config['name']!r} model" + (f" ({variant!r} variant)" if variant else "")
    if part == "verify":
        if not spec.scores_pairs:
            raise ExportOptionError(f"part 'verify' needs a verification head (MTDnet models only): "
                                    f"{what} has no verification head; export part "
                                    f"{'rank' if variant else 'features'!r}")
        return _PairScore(model), ("images_a", "images_b"), ("same_probability",)
    try:
        spec.check_embedding()
    except NoEmbeddingError as exc:
        raise ExportOptionError(f"{exc}; export part 'verify'") from None
    # 'rank' is MTDnet's name for its embedding, the 'features' graph of every model
    return model, ("images",), ("features",) if part == "features" else ("embedding",)


def _input_size(model: nn.Module, given: Sequence[int] | None) -> tuple[int, int]:
    """The export's (height, width): given, else the model's own (fixed, or recorded in its file)."""
    try:
        return model_spec(model).resolve_size(given)
    except InputSizeError as exc:
        raise ExportOptionError(f"{exc} (input_size=)") from None


def _random_inputs(num_inputs: int, batch: int, size: tuple[int, int],
                   generator: torch.Generator) -> tuple[Tensor, ...]:
    # Uniform [0, 1): plausible for both input conventions (normalised and Caffe RGB).
    return tuple(torch.rand(batch, 3, *size, generator=generator) for _ in range(num_inputs))


def check_onnx_parity(
    onnx_path: str | Path,
    model: nn.Module,
    *,
    part: Part = "features",
    input_size: Sequence[int],
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    seed: int = 0,
    label: str | None = None,
) -> float:
    """Run ``onnx_path`` in onnxruntime (CPU) and ``model``'s ``part`` in PyTorch on random batches.

    Returns the largest absolute output difference; raises :class:`ExportParityError` above
    ``atol``, or when a batch size is refused (a batch axis that is not dynamic). Messages call
    the file ``label`` (default: its path).
    """
    ort = _require("onnxruntime")
    name = label or str(onnx_path)
    model = inference_model(model)
    graph, inputs, _ = _graph(model, part)
    size = (int(input_size[0]), int(input_size[1]))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    graph.eval()
    worst = 0.0
    try:
        for batch in batch_sizes:
            tensors = _random_inputs(len(inputs), batch, size, generator)
            with torch.inference_mode():
                expected = graph(*tensors).float().numpy()
            try:
                (got,) = session.run(None, {n: t.numpy() for n, t in zip(inputs, tensors, strict=True)})
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ExportParityError(f"onnxruntime cannot run {name} on a batch of {batch}: "
                                        f"{exc}", float("inf")) from None
            if got.shape != expected.shape:
                raise ExportParityError(f"{name} gives shape {got.shape} for a batch of {batch}, "
                                        f"PyTorch {expected.shape}", float("inf"))
            worst = max(worst, float(np.abs(got.astype(np.float32) - expected).max()))
    finally:
        model.train(was_training)
    if not worst <= atol:  # also catches NaN
        raise ExportParityError(f"{name} differs from PyTorch by up to {worst:.3g} (tolerance "
                                f"{atol:g}) on batches of {', '.join(map(str, batch_sizes))}",
                                worst)
    return worst


def export_onnx(
    model: str | Path | nn.Module,
    out_path: str | Path,
    *,
    part: Part = "features",
    input_size: Sequence[int] | None = None,
    opset: int = 18,
    check: bool = True,
    atol: float = 1e-4,
    on_stage: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export ``part`` of ``model`` (a reidkit model file or module) to the ONNX file ``out_path``.

    ``input_size`` (height, width) defaults to the model's fixed size (MTDnet) or the one its file
    records. ``opset`` 18 is the exporter's native opset; lower ones are converted. With ``check``
    the file is compared with PyTorch (:func:`check_onnx_parity`, batches of 2 and 3) before it
    takes its name, and :class:`ExportParityError` is raised above ``atol`` with nothing written.
    The ONNX metadata records the part, input size, model config and reidkit version.
    ``on_stage(message)`` is told when each slow stage starts (export, parity check).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ExportOptionError(f"the output file should end in .onnx, got {out_path.name!r}")
    if not atol >= 0:  # also refuses NaN
        raise ExportOptionError(f"atol is the largest accepted difference from PyTorch: a number >= 0, "
                                f"got {atol}")
    _require("onnx")
    _require("onnxscript")
    if check:
        _require("onnxruntime")
    stage = on_stage or (lambda message: None)
    model = inference_model(model if isinstance(model, nn.Module) else load_model(model))
    size = _input_size(model, input_size)
    graph, inputs, outputs = _graph(model, part)
    stage(f"exporting part {part!r} at {size[0]}x{size[1]} with torch.export (about a minute on a CPU)")
    was_training = model.training
    graph.eval()  # the model, or the pair-score wrapper around it
    try:
        example = _random_inputs(len(inputs), PARITY_BATCH_SIZES[0], size, torch.Generator())
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(
            graph, example, input_names=list(inputs), output_names=list(outputs),
            dynamic_shapes=tuple({0: batch} for _ in inputs), opset_version=opset,
            dynamo=True, verbose=False)
    finally:
        model.train(was_training)
    program.model.metadata_props.update({
        "reidkit.part": part,
        "reidkit.input_size": json.dumps(list(size)),
        "reidkit.model_config": json.dumps(model.config),
        "reidkit.version": __version__,
    })
    diff = None

    def write(tmp: str) -> None:
        nonlocal diff
        program.save(tmp)
        if check:
            stage("checking the ONNX graph against PyTorch with onnxruntime")
            diff = check_onnx_parity(tmp, model, part=part, input_size=size, atol=atol,
                                     label=f"the export to {out_path} (not written)")

    atomic_write(out_path, write)
    return ExportReport(out_path, part, opset, size, inputs, outputs, diff, atol,
                        PARITY_BATCH_SIZES if check else ())


# ---------------------------------------------------------------------------------- trackers
TRACKER_METADATA_SUFFIX = ".metadata.json"  # BoxMOT reads <model>.onnx.metadata.json


def export_for_tracker(model: str | Path | nn.Module, out_path: str | Path, *,
                       input_size: Sequence[int] | None = None, atol: float = 1e-4,
                       on_stage: Callable[[str], None] | None = None) -> ExportReport:
    """Export an embedding model for multi-object trackers' ReID backends (BoxMOT's ONNX one).

    The graph is the ``features`` export: input ``images`` (N, 3, H, W) with a dynamic batch and
    the model's fixed size, RGB scaled to [0, 1] and normalised with the ImageNet mean and std,
    which is what BoxMOT feeds (crops resized with OpenCV, BGR to RGB, ImageNet normalisation;
    it reads the input size from the graph and L2-normalises the output). Beside it goes the
    metadata file BoxMOT reads (``<file>.onnx.metadata.json``: its preprocessing name) with
    reidkit's own description of the contract. Models that take Caffe-style input (MTDnet) rank
    with a different input contract and are refused.
    """
    model = inference_model(model if isinstance(model, nn.Module) else load_model(model))
    spec = model_spec(model)
    if (spec.mean, spec.std) != (IMAGENET_MEAN, IMAGENET_STD) or spec.network_input != "rgb-normalized":
        raise ExportOptionError(
            f"this {model.config['name']!r} model takes {spec.network_input} input"
            f"{' (Caffe-style input, BGR 0-255)' if spec.network_input == 'caffe-bgr-255' else ''}, "
            "not the ImageNet-normalised RGB trackers feed; export a Pyramid, stripes or baseline "
            "model for tracking")
    report = export_onnx(model, out_path, part="features", input_size=input_size, atol=atol,
                         on_stage=on_stage)
    height, width = report.input_size
    metadata = {
        "schema_version": 1,
        "preprocess": "resize",  # BoxMOT's plain resize to the graph's input size
        "producer": f"reidkit {__version__}",
        "input": {"name": report.inputs[0], "layout": "NCHW", "size": [height, width],
                  "channels": "RGB", "scale": "1/255", "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD)},
        "output": {"name": report.outputs[0], "normalized": False},
    }
    side = Path(f"{report.path}{TRACKER_METADATA_SUFFIX}")
    atomic_write(side, lambda tmp: Path(tmp).write_text(json.dumps(metadata, indent=2)))
    return report
