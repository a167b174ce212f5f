"""The ``reidkit`` command. Each sub-command parses its options and calls the library; no logic here."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reidkit.errors import ReidkitError
from reidkit.footage.cli import ingest_command  # light: torch and OpenCV load when it runs


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can cause: printed as one line instead of a traceback (not with --debug).

    A missing file's own message names it. Anything else is a bug and keeps its traceback.
    """
    from reidkit.config import ConfigError  # a ReidkitError once config.py derives it from one

    return (ReidkitError, ConfigError, FileNotFoundError)


class _Typer(typer.Typer):
    """A Typer app whose every command prints user errors as one line (see :func:`_user_errors`)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def run(*a: Any, **kw: Any) -> Any:
                try:
                    return fn(*a, **kw)
                except _user_errors() as exc:
                    if _options["debug"]:
                        raise
                    raise _fail(str(exc)) from None

            register(run)
            return fn

        return wrap


app = _Typer(
    help="Person re-identification: train Pyramid and MTDnet, evaluate, search, serve.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
datasets_app = _Typer(help="List, inspect and generate data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()
err = Console(stderr=True)
_options = {"debug": False}

JsonOut = Annotated[Path | None, typer.Option(
    "--json", help="also write the result as JSON to this file ('-': standard output only)")]


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        from reidkit import __version__

        console.print(f"reidkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of every error")] = False,
) -> None:
    """Person re-identification: train Pyramid and MTDnet, evaluate, search, serve."""
    _options["debug"] = debug


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _write_json(target: Path | None, data: Any) -> bool:
    """Write ``data`` to ``target`` ('-': standard output); True when it went to standard output."""
    if target is None:
        return False
    text = json.dumps(_finite(data), indent=2, allow_nan=False)
    if str(target) == "-":
        typer.echo(text)
        return True
    target.write_text(text + "\n")
    return False


def _recipes() -> str:
    folder = Path(__file__).parent / "configs"
    return ", ".join(sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_")))


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
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="a data set option KEY=VALUE (repeatable), e.g. split=3")] = None,
    json_out: JsonOut = None,
) -> None:
    """Identity, image and camera counts of a data set on disk.

    Examples: reidkit datasets stats data/Market-1501-v15.09.15 --name market1501
              reidkit datasets stats my_people/ --name folder -o test_ids=50
    """
    import yaml

    from reidkit.data import load_dataset

    opts = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        opts[key] = yaml.safe_load(value)
    dataset = load_dataset(name, root, **opts)
    if _write_json(json_out, {"name": dataset.name, "root": str(root), "subsets": dataset.summary(),
                              "notes": dataset.notes}):
        return
    table = Table(title=f"{dataset.name} ({root})")
    for column in ("subset", "ids", "images", "cams"):
        table.add_column(column, justify="right" if column != "subset" else "left")
    for subset, counts in dataset.summary().items():
        table.add_row(subset, *(f"{counts[k]:,}" for k in ("ids", "images", "cams")))
    console.print(table)
    for note in dataset.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


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

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise typer.BadParameter(f"{out} exists and is not an empty folder; choose a new folder",
                                 param_hint="--out")
    stats = generate(out, preset=preset, seed=seed, domain=domain, misalign=misalign)
    console.print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in stats.items()
                                                if isinstance(v, (int, float))))


# --------------------------------------------------------------------------- training
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Option(
        help=f"recipe file (YAML) or shipped recipe: {_recipes()}")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in train.output_dir")] = False,
    force: Annotated[bool, typer.Option(
        help="start over: delete the run already in train.output_dir")] = False,
    strict: Annotated[bool, typer.Option(help="stop on unreadable images instead of skipping them")
                      ] = False,
    all_splits: Annotated[bool, typer.Option(
        help="train and evaluate every split of a multi-split data set; report the mean CMC")] = False,
    splits: Annotated[str | None, typer.Option(help="only these splits, e.g. 0,3")] = None,
    print_config: Annotated[bool, typer.Option(
        help="print the resolved config (recipe, its bases, overrides, defaults) as YAML; train nothing")
                            ] = False,
) -> None:
    """Train a model from a recipe; extra arguments override keys (section.key=value).

    The run folder (train.output_dir) must not hold another run: continue it with --resume or
    start it over with --force. Progress goes to standard error, the summary (JSON) to standard
    output.

    Examples: reidkit train --config pyramid_market1501_r50 data.root=data/market train.epochs=60
              reidkit train --config mtdnet_viper --all-splits data.root=data/VIPeR
              reidkit train --config mtdnet_viper --print-config
    """
    from reidkit.config import load_config
    from reidkit.training import build_trainer
    from reidkit.training.base import clear_run

    if resume and force:
        raise typer.BadParameter("--resume continues the run, --force deletes it: give one",
                                 param_hint="--force")
    chosen = None
    if splits is not None:
        try:
            chosen = [int(s) for s in splits.split(",")]
        except ValueError:
            raise typer.BadParameter(f"{splits!r} is not a list of split numbers such as 0,3",
                                     param_hint="--splits") from None
    cfg = load_config(config, ctx.args)
    if print_config:
        import yaml

        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)
        return
    if force:
        removed = clear_run(cfg.train.output_dir)
        if removed:
            err.print(f"--force: deleted the run in {cfg.train.output_dir} ({len(removed)} files)")
    if all_splits or chosen is not None:
        from reidkit.training.protocols import run_protocol

        console.print(run_protocol(cfg, chosen, err, resume=resume).as_markdown())
        return
    summary = build_trainer(cfg, resume=resume).fit(strict_images=strict)
    console.print_json(data=_finite(summary))


# --------------------------------------------------------------------------- evaluation
class DistanceFileError(ReidkitError, ValueError):
    """A distance file for ``reidkit evaluate --distmat`` that is not what it should be."""


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
    max_rank: Annotated[int, typer.Option(min=1, help="longest CMC rank")] = 50,
    device: Annotated[str, typer.Option(
        help="cpu | cuda: extraction (--checkpoint) and distances")] = "cpu",
    distractors: Annotated[Path | None, typer.Option(
        help="Market-1501 + 500k: the distractor folder, added to the gallery (--checkpoint)")] = None,
    json_out: JsonOut = None,
) -> None:
    """CMC, mAP and mINP from a distance matrix, from feature files, or from a model on a data set.

    Features are evaluated in blocks of queries (bounded memory, any gallery size, with a progress
    bar); --rerank computes the re-ranked matrix instead.

    Examples: reidkit evaluate --distmat dist.npz
              reidkit evaluate --query q.safetensors --gallery g.safetensors --rerank --json -
              reidkit evaluate --checkpoint run/best.safetensors --root data/synth
              reidkit evaluate --checkpoint best.safetensors --root data/market --distractors d500k/
    """
    from reidkit.evaluation import evaluate_features, evaluate_rank

    options = {"max_rank": max_rank, "protocol": protocol, "ap": ap}
    if distmat is not None:
        if rerank:
            raise typer.BadParameter("--rerank needs features: use --query/--gallery or --checkpoint",
                                     param_hint="--rerank")
        result = evaluate_rank(*_load_distmat(distmat), **options)
    else:
        _device(device)
        if query is not None and gallery is not None:
            q, g = _load_feature_pair(query, gallery)
        elif checkpoint is not None and root is not None and not rerank and metric == "euclidean":
            result = _evaluate_checkpoint(checkpoint, dataset, root, device, distractors,
                                          progress=json_out is None, **options)
            if not _write_json(json_out, result.as_dict()):
                print_rank_result(result)
            return
        elif checkpoint is not None and root is not None:
            _refuse_featureless(checkpoint)
            q, g = _extract_dataset(checkpoint, dataset, root, device, distractors)
        else:
            raise typer.BadParameter("give --distmat FILE, --query/--gallery FILES, or --checkpoint "
                                     "with --root", param_hint="--distmat")
        if rerank:
            result = evaluate_rank(*_feature_distmat(q, g, metric, rerank), **options)
        else:
            result = evaluate_features(q.features, g.features, q.pids, g.pids, q.camids, g.camids,
                                       metric=metric, device=device, progress=json_out is None,
                                       **options)
    if not _write_json(json_out, result.as_dict()):
        print_rank_result(result)


def _load_distmat(path: Path) -> tuple[np.ndarray, ...]:
    import zipfile

    if not path.is_file():
        raise FileNotFoundError(f"distance file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise DistanceFileError(f"{path} is not an .npz archive (write one with numpy.savez or "
                                "`reidkit rerank`)")
    keys = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data]
            if missing:
                raise DistanceFileError(f"{path} lacks arrays {missing}; expected {list(keys)}")
            arrays = tuple(data[k] for k in keys)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DistanceFileError(f"{path} is not a readable .npz archive of numeric arrays ({exc})"
                                ) from None
    wrong = {k: str(a.dtype) for k, a in zip(keys, arrays, strict=True)
             if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)}
    if wrong:
        raise DistanceFileError(f"{path}: " + ", ".join(f"{k} holds {t}" for k, t in wrong.items())
                                + "; every array must hold numbers")
    return arrays


AllowUnknown = Annotated[bool, typer.Option(
    "--allow-unknown-model", help="use feature files that do not record their model (with a warning)")]


def _load_feature_pair(query: Path, gallery: Path, allow_unknown_model: bool = False):
    from reidkit.retrieval.features import check_same_model, load_features

    q, g = load_features(query), load_features(gallery)
    check_same_model(q, g, allow_unknown_model=allow_unknown_model)
    return q, g


def _evaluate_checkpoint(checkpoint: Path, dataset: str, root: Path, device: str,
                         distractors: Path | None, **options: Any):
    """A model file on a data set, ranked as its spec says (embeddings or MTDnet pair scores)."""
    from reidkit.models.io import load_model
    from reidkit.retrieval.evaluate import evaluate_model

    data = _dataset_with(dataset, root, distractors)
    query, gallery = (_readable(r, strict=False) for r in (data.query, data.gallery))
    return evaluate_model(load_model(checkpoint, map_location=device), query, gallery,
                          device=device, batch_size=64, num_workers=2, **options)


def _refuse_featureless(checkpoint: Path) -> None:
    """--rerank and --metric work on features: refuse a model without (MTDnet 'cls') early, and
    say so when a pair model is ranked by its embedding instead of its pair scores."""
    from reidkit.models.io import read_model_spec
    from reidkit.models.spec import NoEmbeddingError

    spec = read_model_spec(checkpoint)
    try:
        spec.check_embedding()
    except NoEmbeddingError as exc:
        raise typer.BadParameter(f"{exc}; --rerank and --metric need features",
                                 param_hint="--checkpoint") from None
    if spec.ranks_by == "pairs":
        err.print("note: --rerank and --metric rank this pair-scoring model by its embedding "
                  "(MTDtrp); without them it is ranked by its pair scores")


def _dataset_with(dataset: str, root: Path, distractors: Path | None):
    from reidkit.data import load_dataset

    return load_dataset(dataset, root, **({} if distractors is None else {"distractors": distractors}))


def _extract_dataset(checkpoint: Path, dataset: str, root: Path, device: str,
                     distractors: Path | None = None):
    from reidkit.retrieval.features import extract_feature_set

    data = _dataset_with(dataset, root, distractors)
    return tuple(extract_feature_set(checkpoint, _readable(records, strict=False), device=device)
                 for records in (data.query, data.gallery))


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
class FeatureValuesError(ReidkitError, ValueError):
    """A feature file whose values cannot be searched (NaN, infinite, empty)."""


def _device(name: str) -> None:
    """Refuse a device this machine does not have before any work."""
    from reidkit.training.base import resolve_device

    resolve_device(name, option="--device")


def _readable(records, strict: bool):
    """``records`` without the images that cannot be read, each reported on standard error."""
    from reidkit.data.loader import UnreadableImagesError, check_records

    kept, bad = check_records(records)
    for u in bad:
        err.print(f"unreadable image {u.path}: {u.reason}", highlight=False, soft_wrap=True)
    if bad and strict:
        raise UnreadableImagesError(f"{len(bad)} image(s) cannot be read (listed above); remove or "
                                    "replace them, or run without --strict to skip them")
    if bad:
        err.print(f"skipped {len(bad)} unreadable image(s)")
    if not kept:
        raise UnreadableImagesError("no image could be read")
    return kept


def _check_feature_suffix(path: Path, option: str) -> None:
    from reidkit.retrieval.features import SUFFIXES

    if path.suffix not in SUFFIXES:
        raise typer.BadParameter(f"feature files end in {' or '.join(SUFFIXES)}; got {path.name!r}",
                                 param_hint=option)


@app.command()
def extract(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    out: Annotated[Path, typer.Option(help="feature file to write (.safetensors or .npz)")],
    images: Annotated[Path | None, typer.Option(help="a folder of images (any layout)")] = None,
    dataset: Annotated[str | None, typer.Option(help="data set name instead of --images")] = None,
    root: Annotated[Path | None, typer.Option(help="data set folder, with --dataset")] = None,
    subset: Annotated[str, typer.Option(help="query | gallery | train, with --dataset")] = "gallery",
    flip: Annotated[bool, typer.Option(help="average with the mirrored image's feature")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    strict: Annotated[bool, typer.Option(help="stop on unreadable images instead of skipping them")
                      ] = False,
) -> None:
    """Extract features of a folder or of a data set's subset into a feature file.

    Every image is checked first: unreadable ones are listed and left out (--strict: refused).
    Under torchrun the images are split across the processes, which write one feature file.

    Examples: reidkit extract --checkpoint run/best.safetensors --images photos/ --out g.safetensors
              reidkit extract --checkpoint run/best.safetensors --dataset market1501 \\
                  --root data/synth --subset query --out q.npz
              torchrun --nproc_per_node 4 -m reidkit.cli extract --device cuda \\
                  --checkpoint m.safetensors --images archive/ --out g.safetensors
    """
    from reidkit.data import load_dataset
    from reidkit.retrieval.features import extract_to_file
    from reidkit.training.distributed import DistContext

    _check_feature_suffix(out, "--out")
    _device(device)
    if images is not None:
        data = load_dataset("folder", images, subset="gallery")
        records = data.gallery
    elif dataset is not None and root is not None:
        if subset not in ("query", "gallery", "train"):
            raise typer.BadParameter(f"--subset must be query, gallery or train, not {subset!r}",
                                     param_hint="--subset")
        data = load_dataset(dataset, root)
        records = getattr(data, subset)
    else:
        raise typer.BadParameter("give --images DIR, or --dataset NAME with --root DIR",
                                 param_hint="--images")
    ranks = DistContext.from_env("cuda" if device.startswith("cuda") else "cpu")
    for note in data.notes if ranks.is_main else ():
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    records = _readable(records, strict)
    if ranks.enabled and device.startswith("cuda"):
        device = f"cuda:{ranks.local_rank}"
    try:
        fs = extract_to_file(checkpoint, records, out, rank=ranks.rank, world_size=ranks.world_size,
                             barrier=ranks.barrier, flip=flip, batch_size=batch_size, device=device,
                             progress=ranks.is_main)
    finally:
        ranks.close()
    if fs is not None:
        console.print(f"wrote {out}: {len(fs):,} images x {fs.dim} dims"
                      + (f" ({ranks.world_size} processes)" if ranks.enabled else ""))


def _query_images(paths: list[Path]) -> list[Path]:
    """The query images: files as given, folders expanded to their images (sorted, recursive)."""
    from reidkit.data.datasets._common import IMAGE_SUFFIXES

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                            and p.is_file())
            if not inside:
                raise typer.BadParameter(f"{path} holds no images", param_hint="--query")
            found += inside
        elif path.exists():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist", param_hint="--query")
    return found


@app.command()
def search(
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    checkpoint: Annotated[Path, typer.Option(help="the model file the gallery was extracted with")],
    query: Annotated[list[Path], typer.Option(help="query image or folder of images (repeatable)")],
    topk: Annotated[int, typer.Option(min=1, help="matches per query")] = 10,
    backend: Annotated[str, typer.Option(help="torch | faiss | auto")] = "torch",
    json_out: JsonOut = None,
    strict: Annotated[bool, typer.Option(help="stop on unreadable query images")] = False,
    camera: Annotated[list[str] | None, typer.Option(
        help="only matches from this camera (3 for _c3, a video's name; repeatable)")] = None,
    time_from: Annotated[float | None, typer.Option(help="only crops seen at or after this second")] = None,
    time_to: Annotated[float | None, typer.Option(help="only crops seen at or before this second")] = None,
    allow_unknown_model: AllowUnknown = False,
    approximate: Annotated[bool, typer.Option(
        help="use the gallery's approximate index (reidkit index) above 100,000 items")] = True,
) -> None:
    """Rank a gallery for one or more query images; for ingested footage, say where and when.

    A gallery of 100,000 items or more with an index built by `reidkit index` (GALLERY.faiss) is
    searched through it, re-scoring its shortlist exactly; otherwise the search is exact.

    Example: reidkit search --gallery g.safetensors --checkpoint run/best.safetensors --query me.jpg --topk 5
             reidkit search --gallery g.safetensors --checkpoint run/best.safetensors --query people/ --json -
             reidkit search --gallery footage/gallery.safetensors --checkpoint m.safetensors \\
                 --query crop.jpg --camera vtest --time-from 10 --time-to 40
    """
    from reidkit.data.dataset import ImageRecord
    from reidkit.retrieval.features import (
        check_known_model,
        check_same_model,
        extract_feature_set,
        load_features,
    )
    from reidkit.retrieval.search import GalleryIndex, load_index_for, search_subset

    queries = _query_images(query)
    g = load_features(gallery)
    if not np.isfinite(g.features).all():
        bad = int((~np.isfinite(g.features).all(axis=1)).sum())
        raise FeatureValuesError(f"{gallery} holds NaN or infinite features for {bad} image(s); "
                                 "re-extract it with `reidkit extract`")
    if len(g) == 0:
        raise FeatureValuesError(f"{gallery} holds no features; extract a gallery with images")
    check_known_model(g, str(gallery), allow_unknown_model=allow_unknown_model)
    if time_from is not None and time_to is not None and time_from > time_to:
        raise typer.BadParameter(f"{time_from} is after --time-to {time_to}", param_hint="--time-from")
    known = {g.camera_label(i) for i in range(len(g))}
    if set(camera or ()) - known:
        raise typer.BadParameter(f"no gallery camera is named {', '.join(sorted(set(camera) - known))}; "
                                 f"the gallery's cameras: {', '.join(sorted(known))}", param_hint="--camera")
    mask = g.select(camera, time_from, time_to)
    size = g.meta.get("input_size") or [None, None]
    records = _readable([ImageRecord(str(p), -1, -1) for p in queries], strict)
    q = extract_feature_set(checkpoint, records, height=size[0], width=size[1],
                            flip=bool(g.meta.get("flip")), num_workers=0, progress=False)
    check_same_model(q, g, allow_unknown_model=allow_unknown_model)
    ann = (load_index_for(gallery, len(g), g.dim, g.meta.get("metric", "euclidean"))
           if approximate else None)
    index = GalleryIndex.from_feature_set(g, backend=backend, approximate=ann)
    if index.mode == "approximate":
        typer.echo(f"approximate search: {ann.spec}, nprobe {ann.nprobe}, "
                   f"{ann.refine * topk} candidates re-scored per query", err=True)
    dist, idx = search_subset(index, g, q.features, min(topk, len(g)), mask)
    results = {r.path: [{"rank": k + 1, "distance": float(d), **g.describe(int(i))}
                        for k, (d, i) in enumerate(zip(drow, irow, strict=True))]
               for r, drow, irow in zip(records, dist, idx, strict=True)}
    if _write_json(json_out, results):
        return
    footage = g.sightings is not None
    columns = ("rank", "distance", "person", "camera", *(("time", "frame") if footage else ()), "path")
    for path, matches in results.items():
        table = Table(title=f"query {path}" + ("" if matches else ": no gallery image passes the filters"))
        for column in columns:
            table.add_column(column, justify="left" if column in ("path", "camera") else "right")
        for m in matches:
            seen = (f"{m['time']:.1f}s", str(m["frame"])) if "frame" in m else ("", "")
            table.add_row(str(m["rank"]), f"{m['distance']:.4f}", m["identity"] or "-", m["camera"],
                          *(seen if footage else ()), m["path"])
        console.print(table)


@app.command("index")
def index_command(
    gallery: Annotated[Path, typer.Option(help="gallery feature file (reidkit extract)")],
    spec: Annotated[str, typer.Option(help="faiss index_factory string; {nlist} stands for about "
                                           "sqrt(N) lists")] = "PCA256,IVF{nlist},Flat",
    nprobe: Annotated[int, typer.Option(min=1, help="inverted lists searched per query")] = 32,
    refine: Annotated[int, typer.Option(min=1, help="candidates re-scored per wanted match")] = 10,
) -> None:
    """Build the approximate search index of a gallery feature file, saved next to it (FILE.faiss).

    `reidkit search` and the service use it for galleries of 100,000 items or more.

    Example: reidkit index --gallery g.safetensors
    """
    import time

    from reidkit.retrieval.features import load_features
    from reidkit.retrieval.search import build_index_file

    g = load_features(gallery)
    start = time.perf_counter()
    path = build_index_file(gallery, g.features, g.meta.get("metric", "euclidean"), spec=spec,
                            nprobe=nprobe, refine=refine)
    console.print(f"wrote {path}: {len(g):,} items, {path.stat().st_size / len(g):.0f} bytes per "
                  f"item, built in {time.perf_counter() - start:.1f} s", soft_wrap=True)


@app.command("rerank")
def rerank_command(
    query: Annotated[Path, typer.Option(help="query feature file")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    out: Annotated[Path, typer.Option(help=".npz for `reidkit evaluate --distmat`")],
    k1: Annotated[int, typer.Option(min=1, help="k-reciprocal neighbourhood size")] = 20,
    k2: Annotated[int, typer.Option(min=1, help="query-expansion neighbourhood size")] = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", min=0.0, max=1.0,
                                                help="weight of the original distance")] = 0.3,
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
) -> None:
    """k-reciprocal re-ranking of a query x gallery problem into a distance file.

    Example: reidkit rerank --query q.safetensors --gallery g.safetensors --out reranked.npz
    """
    from reidkit.evaluation import re_rank_features
    from reidkit.models.io import atomic_write

    if out.suffix != ".npz":
        raise typer.BadParameter(f"the distance file ends in .npz; got {out.name!r}", param_hint="--out")
    q, g = _load_feature_pair(query, gallery)
    dist = re_rank_features(q.features, g.features, k1, k2, lambda_value, metric=metric)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, distmat=dist, q_pids=q.pids, g_pids=g.pids, q_camids=q.camids,
                     g_camids=g.camids)

    atomic_write(out, write)
    console.print(f"wrote {out}: {dist.shape[0]:,} x {dist.shape[1]:,} re-ranked distances")


@app.command()
def visualize(
    query: Annotated[Path, typer.Option(help="query feature file")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs")],
    num: Annotated[int, typer.Option(min=1, help="number of queries to draw")] = 8,
    topk: Annotated[int, typer.Option(min=1, help="matches per ranked list")] = 10,
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
    allow_unknown_model: AllowUnknown = False,
) -> None:
    """Ranked-list pictures (green/red borders when labels are known) and a CMC plot.

    Example: reidkit visualize --query q.safetensors --gallery g.safetensors --out pictures/
    """
    from reidkit.evaluation import compute_distance, evaluate_rank
    from reidkit.retrieval.visualize import plot_cmc, ranked_lists

    q, g = _load_feature_pair(query, gallery, allow_unknown_model)
    dist = compute_distance(q.features, g.features, metric=metric)
    labelled = bool((q.pids >= 0).any() and (g.pids >= 0).any())
    records = [fs.records() for fs in (q, g)]  # with the data set's camera/person names
    out.mkdir(parents=True, exist_ok=True)
    picks = np.linspace(0, len(q) - 1, min(num, len(q))).round().astype(int).tolist()
    for n, image in enumerate(ranked_lists(dist, *records, picks, topk=topk, labelled=labelled)):
        image.save(out / f"ranked_{n:03d}.png")
    if labelled:
        result = evaluate_rank(dist, q.pids, g.pids, q.camids, g.camids, max_rank=min(50, len(g)))
        plot_cmc({"model": result.cmc}, out / "cmc.png")
    console.print(f"wrote {len(picks)} ranked lists{' and cmc.png' if labelled else ''} to {out}")


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="model file (.safetensors)")],
    json_out: JsonOut = None,
) -> None:
    """What a model file holds: architecture, input, training epoch, validation score, data set.

    Example: reidkit info run/best.safetensors
    """
    from reidkit.models.io import read_model_meta, read_model_spec

    config, extra = read_model_meta(model)
    spec = read_model_spec(model)
    about = {
        "file": str(model),
        "model": config.get("name"),
        "config": config,
        "spec": spec.as_dict(),
        "input_size": list(spec.input_size) if spec.input_size else None,
        "dataset": extra.get("dataset"),
        "epoch": extra.get("epoch"),
        "step": extra.get("step"),
        "validation": {k.removeprefix("val_"): v for k, v in extra.items() if k.startswith("val_")},
    }
    if _write_json(json_out, about):
        return
    table = Table(show_header=False, title=str(model))
    options = ", ".join(f"{k}={v}" for k, v in config.items() if k != "name")
    size = about["input_size"]
    val = about["validation"]
    normalised = "ImageNet mean/std" if spec.mean is not None else "not normalised"
    rows = [("model", f"{about['model']} ({options})"),
            ("input", (f"{size[0]}x{size[1]}" if size else "size not recorded")
             + f", {spec.interpolation} resize, RGB [0, 1], {normalised}"
             + (", BGR 0-255 inside (Caffe)" if spec.network_input == "caffe-bgr-255" else "")),
            ("ranks by", f"{spec.ranks_by}" + (f" ({spec.feature_dim}-d features)"
                                              if spec.ranks_by == "embedding" else " scores")),
            ("data set", str(about["dataset"] or "not recorded")),
            ("trained", f"epoch {about['epoch']}, step {about['step']}" if about["epoch"] is not None
             else "not recorded"),
            ("validation", ", ".join(f"{k} {100 * v:.1f}%" for k, v in val.items()
                                     if isinstance(v, (int, float))) or "none recorded")]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    onnx: Annotated[Path, typer.Option(help="ONNX file to write")],
    part: Annotated[str, typer.Option(help="features (Pyramid) | rank | verify (MTDnet)")] = "features",
    atol: Annotated[float, typer.Option(min=0.0, help="largest accepted difference from PyTorch")
                    ] = 1e-4,
    for_tracker: Annotated[bool, typer.Option(
        "--for-tracker", help="for multi-object trackers' ReID backends (BoxMOT): features "
                              "part plus the metadata file they read")] = False,
) -> None:
    """Export a model to ONNX and check it against PyTorch with onnxruntime.

    Nothing is written when the check fails.

    Examples: reidkit export --checkpoint run/best.safetensors --onnx pyramid.onnx
              reidkit export --checkpoint run/best.safetensors --onnx reid.onnx --for-tracker
    """
    from reidkit.export import export_for_tracker, export_onnx

    stage = lambda message: err.print(f"{message} ...", highlight=False)  # noqa: E731
    if for_tracker:
        report = export_for_tracker(checkpoint, onnx, atol=atol, on_stage=stage)
        err.print(f"tracker metadata: {report.path}.metadata.json", highlight=False)
    else:
        report = export_onnx(checkpoint, onnx, part=part, atol=atol, on_stage=stage)
    console.print(f"wrote {report.path} ({report.part}, input {report.input_size[0]}x"
                  f"{report.input_size[1]}, opset {report.opset}); onnxruntime vs PyTorch: max abs "
                  f"difference {report.max_abs_diff:.3g} (tolerance {report.atol:g})")


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Option(help="model file (.safetensors)")],
    gallery: Annotated[Path, typer.Option(help="gallery feature file from `reidkit extract`")],
    query: Annotated[Path | None, typer.Option(help="optional query feature file")] = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    k: Annotated[int, typer.Option(min=1, help="default number of matches")] = 10,
    allow_unknown_model: AllowUnknown = False,
) -> None:
    """Serve gallery search over HTTP, with a web page at / (API docs at /docs).

    Example: reidkit serve --checkpoint run/best.safetensors --gallery g.safetensors --query q.safetensors
    """
    from reidkit.serve import serve as run_service

    run_service(checkpoint, gallery, query_features=query, host=host, port=port, k_default=k,
                allow_unknown_model=allow_unknown_model)


app.command("ingest")(ingest_command)


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for data, model and report")] = Path("demo-output"),
    epochs: Annotated[int | None, typer.Option(min=1, help="override the recipe's epochs")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Generate synthetic data, train Pyramid with dynamic training on CPU, evaluate, report.

    Example: reidkit demo --out demo-output
    """
    from reidkit.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, console=console)


if __name__ == "__main__":
    app()
