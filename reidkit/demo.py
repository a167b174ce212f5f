"""``reidkit demo``: synthetic data -> Pyramid with dynamic training on CPU -> evaluation -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from reidkit.config import load_config
from reidkit.data import load_dataset
from reidkit.data.loader import build_test_loader
from reidkit.data.synthetic import generate
from reidkit.data.transforms import build_transforms
from reidkit.evaluation import compute_distance, evaluate_rank
from reidkit.models.histogram import color_histogram_features
from reidkit.models.inference import extract_features
from reidkit.models.io import load_model
from reidkit.report import write_report
from reidkit.training.trainer import Trainer

RECIPE = "demo_cpu"


def run_demo(out: Path, *, epochs: int | None = None, seed: int = 0,
             console: Console | None = None) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the test results of the model and the baseline."""
    console = console or Console()
    started = time.perf_counter()
    out = Path(out)
    data_root = out / "data"
    if not (data_root / "meta.json").is_file():
        console.print(f"generating synthetic pedestrians into {data_root} ...")
        generate(data_root, preset="demo", seed=seed)
    overrides = [f"data.root={data_root}", f"train.output_dir={out / 'run'}", f"train.seed={seed}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    cfg = load_config(RECIPE, overrides)
    run_dir = out / "run"
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    summary = Trainer(cfg, console=console).fit()

    dataset = load_dataset("market1501", data_root)
    q_pids, g_pids, q_cams, g_cams = (
        np.array([getattr(r, key) for r in records])
        for key, records in (("pid", dataset.query), ("pid", dataset.gallery),
                             ("camid", dataset.query), ("camid", dataset.gallery)))
    transform = build_transforms(cfg.data.height, cfg.data.width, train=False)
    model = load_model(summary["model"])
    feats = [extract_features(model, build_test_loader(records, transform, batch_size=64,
                                                       num_workers=cfg.data.num_workers))
             for records in (dataset.query, dataset.gallery)]
    distmat = compute_distance(*feats, metric="euclidean")
    hist = [color_histogram_features([r.path for r in records])
            for records in (dataset.query, dataset.gallery)]
    results = {
        "Pyramid, dynamic training": evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams),
        "colour histogram (no learning)": evaluate_rank(
            compute_distance(*hist, metric="euclidean"), q_pids, g_pids, q_cams, g_cams),
    }
    table = {name: _row(r) for name, r in results.items()}
    page = write_report(
        out / "report", title="reidkit demo: Pyramid on synthetic pedestrians", results=table,
        cmc={name: r.cmc for name, r in results.items()}, metrics_path=run_dir / "metrics.jsonl",
        distmat=distmat, query=dataset.query, gallery=dataset.gallery,
        notes=[f"recipe {RECIPE}, {summary['epochs']} epochs, {summary['steps']} steps, "
               f"model chosen on a validation split of training identities "
               f"(epoch {summary.get('best_epoch')})",
               f"{len(dataset.query)} queries, {len(dataset.gallery)} gallery images"])
    _print_summary(console, table, page, time.perf_counter() - started)
    return table


def _row(result) -> dict[str, float]:
    return {"mAP": result.mAP, "rank1": result.cmc[0], "rank5": result.cmc[4],
            "rank10": result.cmc[9], "mINP": result.mINP}


def _print_summary(console: Console, table: dict[str, dict[str, float]], page: Path,
                   seconds: float) -> None:
    view = Table(title="Test set (synthetic, Market-1501 protocol), %")
    view.add_column("method")
    for column in ("mAP", "rank-1", "rank-5", "rank-10", "mINP"):
        view.add_column(column, justify="right")
    for name, row in table.items():
        view.add_row(name, *(f"{100 * row[k]:.1f}" for k in ("mAP", "rank1", "rank5", "rank10", "mINP")))
    console.print(view)
    console.print(f"report: {page}   (demo took {seconds / 60:.1f} min)")
