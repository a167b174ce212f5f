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
    from reidkit.data.image import ImageReadError
    from reidkit.models.io import CheckpointError
    from reidkit.training.base import ResumeError

    return (ConfigError, DatasetLayoutError, CheckpointError, ResumeError, ImageReadError,
            FileNotFoundError, ValueError, ImportError)


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
    config: Annotated[str | None, typer.Option(help="recipe name (reidkit/configs) or YAML file")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in train.output_dir")] = False,
    all_splits: Annotated[bool, typer.Option(
        help="train and evaluate every split of a multi-split data set; report the mean CMC")] = False,
    splits: Annotated[str | None, typer.Option(help="only these splits, e.g. 0,3")] = None,
) -> None:
    """Train a model from a recipe; extra arguments override keys (section.key=value).

    Examples: reidkit train --config pyramid_market1501_r50 data.root=data/market train.epochs=60
              reidkit train --config mtdnet_viper --all-splits data.root=data/VIPeR
    """
    from reidkit.config import load_config
    from reidkit.training.trainer import Trainer

    try:
        cfg = load_config(config, ctx.args)
        if all_splits or splits is not None:
            from reidkit.training.protocols import run_protocol

            chosen = [int(s) for s in splits.split(",")] if splits else None
            console.print(run_protocol(cfg, chosen, console).as_markdown())
            return
        if cfg.model.name == "mtdnet":
            from reidkit.training.mtdnet_trainer import MTDNetTrainer as Trainer  # noqa: N814
        summary = Trainer(cfg, resume=resume).fit()
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print_json(data=summary)


# --------------------------------------------------------------------------- evaluation
@app.command()
def evaluate(
    distmat: Annotated[Path | None, typer.Option(
        help=".npz with distmat, q_pids, g_pids, q_camids, g_camids")] = None,
    query: Annotated[Path | None, typer.Option(help="query feature file (reidkit extract)")] = None,
    gallery: Annotated[Path | None, typer.Option(help="gallery feature file")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="model file (.safetensors)")] = None,
    dataset: Annotated[str, typer.Option(help="data set name, with --checkpoint")] = "market1501",
    root: Annotated[Path | None, typer.Option(help="data set folder, with --checkpoint")] = None,
    protocol: Annotated[str, typer.Option(help="market1501 | cuhk03")] = "market1501",
    ap: Annotated[str, typer.Option(help="standard | official")] = "standard",
    metric: Annotated[str, typer.Option(help="euclidean | cosine (features)")] = "euclidean",
    rerank: Annotated[bool, typer.Option(help="k-reciprocal re-ranking (features)")] = False,
    max_rank: Annotated[int, typer.Option(help="longest CMC rank")] = 50,
) -> None:
    """CMC, mAP and mINP from a distance matrix, from feature files, or from a model on a data set.

    Examples: reidkit evaluate --distmat dist.npz
              reidkit evaluate --query q.safetensors --gallery g.safetensors --rerank
              reidkit evaluate --checkpoint run/best.safetensors --root data/synth
    """
    from reidkit.evaluation import evaluate_rank

    try:
        if distmat is not None:
            if rerank:
                raise ValueError("--rerank needs features: use --query/--gallery or --checkpoint")
            arrays = _load_distmat(distmat)
        elif query is not None and gallery is not None:
            arrays = _feature_distmat(*_load_feature_pair(query, gallery), metric, rerank)
        elif checkpoint is not None and root is not None:
            arrays = _feature_distmat(*_extract_dataset(checkpoint, dataset, root), metric, rerank)
        else:
            raise _fail("give --distmat FILE, --query/--gallery FILES, or --checkpoint with --root")
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


def _load_feature_pair(query: Path, gallery: Path):
    from reidkit.retrieval.features import check_same_model, load_features

    q, g = load_features(query), load_features(gallery)
    check_same_model(q, g)
    return q, g


def _extract_dataset(checkpoint: Path, dataset: str, root: Path):
    from reidkit.data import load_dataset
    from reidkit.retrieval.features import extract_feature_set

    data = load_dataset(dataset, root)
    return tuple(extract_feature_set(checkpoint, records) for records in (data.query, data.gallery))


def _feature_distmat(q, g, metric: str, rerank: bool) -> tuple[np.ndarray, ...]:
    from reidkit.evaluation import compute_distance, re_rank_features

    if rerank:
        dist = re_rank_features(q.features, g.features, metric=metric)
    else:
        dist = compute_distance(q.features, g.features, metric=metric)
    return dist, q.pids, g.pids, q.camids, g.camids


def print_rank_result(result) -> None:
    table = Table(title=f"{result.num_valid_queries} valid queries")
    for column in ("mAP", "mINP", "rank-1", "rank-5", "rank-10", "rank-20"):
        table.add_column(column, justify="right")
    ranks = [result.cmc[k - 1] if k <= len(result.cmc) else float("nan") for k in (1, 5, 10, 20)]
    table.add_row(*(f"{100 * v:.1f}" for v in (result.mAP, result.mINP, *ranks)))
    console.print(table)


# --------------------------------------------------------------------------- retrieval
@app.command()
def extract(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    out: Annotated[Path, typer.Option(help="feature file to write (.safetensors or .npz)")],
    images: Annotated[Path | None, typer.Option(help="a folder of images (any layout)")] = None,
    dataset: Annotated[str | None, typer.Option(help="data set name instead of --images")] = None,
    root: Annotated[Path | None, typer.Option(help="data set folder, with --dataset")] = None,
    subset: Annotated[str, typer.Option(help="query | gallery | train, with --dataset")] = "gallery",
    flip: Annotated[bool, typer.Option(help="average with the mirrored image's feature")] = False,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
) -> None:
    """Extract features of a folder or of a data set's subset into a feature file.

    Examples: reidkit extract --checkpoint run/best.safetensors --images photos/ --out g.safetensors
              reidkit extract --checkpoint run/best.safetensors --dataset market1501 \\
                  --root data/synth --subset query --out q.npz
    """
    from reidkit.data import load_dataset
    from reidkit.retrieval.features import extract_feature_set, save_features

    try:
        if images is not None:
            records = load_dataset("folder", images).gallery
        elif dataset is not None and root is not None:
            if subset not in ("query", "gallery", "train"):
                raise ValueError(f"--subset must be query, gallery or train, not {subset!r}")
            records = getattr(load_dataset(dataset, root), subset)
        else:
            raise _fail("give --images DIR, or --dataset NAME with --root DIR")
        fs = extract_feature_set(checkpoint, records, flip=flip, batch_size=batch_size, device=device)
        save_features(out, fs)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {out}: {len(fs):,} images x {fs.dim} dims")


@app.command()
def search(
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    checkpoint: Annotated[Path, typer.Option(help="the model file the gallery was extracted with")],
    query: Annotated[list[Path], typer.Option(help="query image (repeat for several)")],
    topk: Annotated[int, typer.Option(help="matches per query")] = 10,
    backend: Annotated[str, typer.Option(help="torch | faiss | auto")] = "torch",
    json_out: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
) -> None:
    """Rank a gallery for one or more query images.

    Example: reidkit search --gallery g.safetensors --checkpoint run/best.safetensors --query me.jpg --topk 5
    """
    import json

    from reidkit.data.dataset import ImageRecord
    from reidkit.retrieval.features import check_same_model, extract_feature_set, load_features
    from reidkit.retrieval.search import GalleryIndex

    try:
        g = load_features(gallery)
        size = g.meta.get("input_size") or [None, None]
        q = extract_feature_set(checkpoint, [ImageRecord(str(p), -1, -1) for p in query],
                                height=size[0], width=size[1], flip=bool(g.meta.get("flip")),
                                num_workers=0, progress=False)
        check_same_model(q, g)
        dist, idx = GalleryIndex.from_feature_set(g, backend=backend).search(q.features,
                                                                              min(topk, len(g)))
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    results = {str(path): [{"rank": r + 1, "path": g.paths[i], "distance": float(d),
                            "pid": int(g.pids[i]), "camid": int(g.camids[i])}
                           for r, (d, i) in enumerate(zip(drow, irow, strict=True))]
               for path, drow, irow in zip(query, dist, idx, strict=True)}
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2))
    for path, matches in results.items():
        table = Table(title=f"query {path}")
        for column in ("rank", "distance", "pid", "cam", "path"):
            table.add_column(column, justify="left" if column == "path" else "right")
        for m in matches:
            table.add_row(str(m["rank"]), f"{m['distance']:.4f}", str(m["pid"]), str(m["camid"]),
                          m["path"])
        console.print(table)


@app.command("rerank")
def rerank_command(
    query: Annotated[Path, typer.Option(help="query feature file")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    out: Annotated[Path, typer.Option(help=".npz for `reidkit evaluate --distmat`")],
    k1: Annotated[int, typer.Option(help="k-reciprocal neighbourhood size")] = 20,
    k2: Annotated[int, typer.Option(help="query-expansion neighbourhood size")] = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", help="weight of the original distance")] = 0.3,
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
) -> None:
    """k-reciprocal re-ranking of a query x gallery problem into a distance file.

    Example: reidkit rerank --query q.safetensors --gallery g.safetensors --out reranked.npz
    """
    from reidkit.evaluation import re_rank_features

    try:
        q, g = _load_feature_pair(query, gallery)
        dist = re_rank_features(q.features, g.features, k1, k2, lambda_value, metric=metric)
        np.savez(out, distmat=dist, q_pids=q.pids, g_pids=g.pids, q_camids=q.camids,
                 g_camids=g.camids)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {out}: {dist.shape[0]:,} x {dist.shape[1]:,} re-ranked distances")


@app.command()
def visualize(
    query: Annotated[Path, typer.Option(help="query feature file")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs")],
    num: Annotated[int, typer.Option(help="number of queries to draw")] = 8,
    topk: Annotated[int, typer.Option(help="matches per ranked list")] = 10,
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
) -> None:
    """Ranked-list pictures (green/red borders when labels are known) and a CMC plot.

    Example: reidkit visualize --query q.safetensors --gallery g.safetensors --out pictures/
    """
    from reidkit.data.dataset import ImageRecord
    from reidkit.evaluation import compute_distance, evaluate_rank
    from reidkit.retrieval.visualize import plot_cmc, ranked_lists

    try:
        q, g = _load_feature_pair(query, gallery)
        dist = compute_distance(q.features, g.features, metric=metric)
        labelled = bool((q.pids >= 0).any() and (g.pids >= 0).any())
        records = [[ImageRecord(p, int(i), int(c)) for p, i, c in zip(fs.paths, fs.pids, fs.camids,
                                                                        strict=True)]
                   for fs in (q, g)]
        out.mkdir(parents=True, exist_ok=True)
        picks = np.linspace(0, len(q) - 1, min(num, len(q))).round().astype(int).tolist()
        for n, image in enumerate(ranked_lists(dist, *records, picks, topk=topk, labelled=labelled)):
            image.save(out / f"ranked_{n:03d}.png")
        if labelled:
            result = evaluate_rank(dist, q.pids, g.pids, q.camids, g.camids,
                                   max_rank=min(50, len(g)))
            plot_cmc({"model": result.cmc}, out / "cmc.png")
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {len(picks)} ranked lists{' and cmc.png' if labelled else ''} to {out}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    onnx: Annotated[Path, typer.Option(help="ONNX file to write")],
    part: Annotated[str, typer.Option(help="features (Pyramid) | rank | verify (MTDnet)")] = "features",
    atol: Annotated[float, typer.Option(help="largest accepted difference from PyTorch")] = 1e-4,
) -> None:
    """Export a model to ONNX and check it against PyTorch with onnxruntime.

    Example: reidkit export --checkpoint run/best.safetensors --onnx pyramid.onnx
    """
    from reidkit.export import ExportParityError, export_onnx

    try:
        report = export_onnx(checkpoint, onnx, part=part, atol=atol)
    except ExportParityError as exc:
        raise _fail(f"{exc} (max abs difference {exc.max_abs_diff:.3g})") from None
    except _user_errors() as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {report.path} ({report.part}, input {report.input_size[0]}x"
                  f"{report.input_size[1]}, opset {report.opset}); onnxruntime vs PyTorch: max abs "
                  f"difference {report.max_abs_diff:.3g} (tolerance {report.atol:g})")


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file from `reidkit extract`")],
    query: Annotated[Path | None, typer.Option(help="optional query feature file")] = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    k: Annotated[int, typer.Option(help="default number of matches")] = 10,
) -> None:
    """Serve gallery search over HTTP, with a web page at /.

    Example: reidkit serve --checkpoint run/best.safetensors --gallery g.safetensors --query q.safetensors
    """
    try:
        from reidkit.serve import serve as run_service

        run_service(checkpoint, gallery, query_features=query, host=host, port=port, k_default=k)
    except _user_errors() as exc:
        raise _fail(str(exc)) from None


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
