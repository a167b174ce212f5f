"""The ``reidkit`` command. Each sub-command parses its options and calls the library; no logic here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    help="Person re-identification: train Pyramid and MTDnet, evaluate, search, serve.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
datasets_app = typer.Typer(help="List, inspect and generate data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code=2)


def _user_errors():
    """The errors a user can cause, printed as one line instead of a traceback."""
    from reidkit.config import ConfigError
    from reidkit.data.datasets import DatasetLayoutError
    from reidkit.models.io import CheckpointError
    from reidkit.training.trainer import ResumeError

    return (ConfigError, DatasetLayoutError, CheckpointError, ResumeError, FileNotFoundError,
            ValueError)


# --------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list() -> None:
    """Names accepted by `load_dataset` and `data.dataset=` in recipes.

    Example: reidkit datasets list
    """
    from reidkit.data import list_datasets

    for name in list_datasets():
        console.print(name)


@datasets_app.command("stats")
def datasets_stats(
    root: Annotated[Path, typer.Argument(help="folder the data set unpacks to")],
    name: Annotated[str, typer.Option("--name", "-n", help="data set name")] = "market1501",
) -> None:
    """Identity, image and camera counts of a data set on disk.

    Example: reidkit datasets stats data/Market-1501-v15.09.15 --name market1501
    """
    from reidkit.data import load_dataset

    try:
        dataset = load_dataset(name, root)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"{dataset.name} ({root})")
    for column in ("subset", "ids", "images", "cams"):
        table.add_column(column, justify="right" if column != "subset" else "left")
    for subset, counts in dataset.summary().items():
        table.add_row(subset, *(f"{counts[k]:,}" for k in ("ids", "images", "cams")))
    console.print(table)
    for note in dataset.notes:
        console.print(f"note: {note}")


@datasets_app.command("synth")
def datasets_synth(
    out: Annotated[Path, typer.Option(help="output folder (Market-1501 layout)")],
    preset: Annotated[str, typer.Option(help="tiny | demo | benchmark")] = "demo",
    seed: Annotated[int, typer.Option(help="random seed; same seed, same files")] = 0,
    domain: Annotated[str, typer.Option(help="camera style set: a or b")] = "a",
    misalign: Annotated[bool, typer.Option(help="jitter the detection boxes")] = True,
) -> None:
    """Generate the synthetic pedestrian data set.

    Example: reidkit datasets synth --out data/synth --preset demo --seed 0
    """
    from reidkit.data.synthetic import generate

    try:
        stats = generate(out, preset=preset, seed=seed, domain=domain, misalign=misalign)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in stats.items()
                                                if isinstance(v, (int, float))))


# --------------------------------------------------------------------------- training
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML recipe from configs/")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in train.output_dir")] = False,
) -> None:
    """Train a model from a recipe; extra arguments override keys (section.key=value).

    Example: reidkit train --config configs/pyramid_market1501_r50.yaml train.epochs=60
    """
    from reidkit.config import load_config
    from reidkit.training.trainer import Trainer

    try:
        cfg = load_config(config, ctx.args)
        summary = Trainer(cfg, resume=resume).fit()
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print_json(data=summary)


# --------------------------------------------------------------------------- evaluation
@app.command()
def evaluate(
    distmat: Annotated[Path | None, typer.Option(
        help=".npz with distmat, q_pids, g_pids, q_camids, g_camids")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="model file (.safetensors)")] = None,
    dataset: Annotated[str, typer.Option(help="data set name, with --checkpoint")] = "market1501",
    root: Annotated[Path | None, typer.Option(help="data set folder, with --checkpoint")] = None,
    height: Annotated[int, typer.Option(help="input height, with --checkpoint")] = 384,
    width: Annotated[int, typer.Option(help="input width, with --checkpoint")] = 128,
    protocol: Annotated[str, typer.Option(help="market1501 | cuhk03")] = "market1501",
    ap: Annotated[str, typer.Option(help="standard | official")] = "standard",
    metric: Annotated[str, typer.Option(help="euclidean | cosine, with --checkpoint")] = "euclidean",
    max_rank: Annotated[int, typer.Option(help="longest CMC rank")] = 50,
) -> None:
    """CMC, mAP and mINP from a saved distance matrix or from a trained model on a data set.

    Examples: reidkit evaluate --distmat dist.npz
              reidkit evaluate --checkpoint runs/demo/best.safetensors --dataset market1501 --root data/synth
    """
    from reidkit.evaluation import evaluate_rank

    try:
        if distmat is not None:
            arrays = _load_distmat(distmat)
        elif checkpoint is not None and root is not None:
            arrays = _model_distmat(checkpoint, dataset, root, height, width, metric)
        else:
            raise _fail("give --distmat FILE, or --checkpoint FILE with --root DIR")
        result = evaluate_rank(*arrays, max_rank=max_rank, protocol=protocol, ap=ap)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    print_rank_result(result)


def _load_distmat(path: Path) -> tuple[np.ndarray, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"distance file {path} does not exist")
    with np.load(path) as data:
        keys = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; expected {list(keys)}")
        return tuple(data[k] for k in keys)


def _model_distmat(checkpoint: Path, dataset: str, root: Path, height: int, width: int,
                   metric: str) -> tuple[np.ndarray, ...]:
    from reidkit.data import load_dataset
    from reidkit.data.loader import build_test_loader
    from reidkit.data.transforms import build_transforms
    from reidkit.evaluation import compute_distance
    from reidkit.models.inference import extract_features
    from reidkit.models.io import load_model

    model = load_model(checkpoint)
    data = load_dataset(dataset, root)
    transform = build_transforms(height, width, train=False)
    feats = [extract_features(model, build_test_loader(records, transform, batch_size=64,
                                                       num_workers=2))
             for records in (data.query, data.gallery)]
    dist = compute_distance(feats[0], feats[1], metric=metric)
    return (dist, *(np.array([getattr(r, key) for r in records])
                    for key in ("pid", "camid") for records in (data.query, data.gallery)))


def print_rank_result(result) -> None:
    table = Table(title=f"{result.num_valid_queries} valid queries")
    for column in ("mAP", "mINP", "rank-1", "rank-5", "rank-10", "rank-20"):
        table.add_column(column, justify="right")
    ranks = [result.cmc[k - 1] if k <= len(result.cmc) else float("nan") for k in (1, 5, 10, 20)]
    table.add_row(*(f"{100 * v:.1f}" for v in (result.mAP, result.mINP, *ranks)))
    console.print(table)


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for data, model and report")] = Path("demo-output"),
    epochs: Annotated[int | None, typer.Option(help="override the recipe's epochs")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Generate synthetic data, train Pyramid with dynamic training on CPU, evaluate, report.

    Example: reidkit demo --out demo-output
    """
    from reidkit.demo import run_demo

    try:
        run_demo(out, epochs=epochs, seed=seed, console=console)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None


if __name__ == "__main__":
    app()
