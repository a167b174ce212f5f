"""``reidkit demo``: synthetic data -> Pyramid with dynamic training on CPU -> evaluation -> report.

The numbers are the same on every run and machine with the same kind of CPU: the demo trains on
the CPU with :data:`THREADS` threads whatever the machine has (summation order, hence the last
bits of every result, depends on the thread count) and deterministic algorithms. CPUs with
different vector units (AVX2, AVX-512) run different kernels and can still differ slightly.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from reidkit.config import load_config
from reidkit.data import load_dataset
from reidkit.data.synthetic import generate
from reidkit.errors import ReidkitError
from reidkit.evaluation import compute_distance, evaluate_rank
from reidkit.models.histogram import color_histogram_features
from reidkit.models.io import load_model
from reidkit.report import write_report
from reidkit.retrieval.evaluate import model_distances
from reidkit.training.base import clear_run
from reidkit.training.trainer import Trainer

RECIPE = "demo_cpu"
THREADS = 2  # fixed, so that the results do not depend on the machine's number of cores


def run_demo(out: Path, *, epochs: int | None = None, seed: int = 0,
             console: Console | None = None) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the test results of the model and the baseline.

    The synthetic data in ``out/data`` is reused when it was generated with ``seed``; the run in
    ``out/run`` starts over each time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(Path(out), epochs, seed, console or Console())
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, epochs: int | None, seed: int, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    data_root = out / "data"
    meta = data_root / "meta.json"
    if meta.is_file() and json.loads(meta.read_text())["params"].get("seed") != seed:
        shutil.rmtree(data_root)  # the demo's own data of another seed
    if not meta.is_file():
        if data_root.exists() and any(data_root.iterdir()):
            raise ReidkitError(f"{data_root} holds files that are not the demo's data; choose "
                               "another --out")
        console.print(f"generating synthetic pedestrians into {data_root} ...")
        generate(data_root, preset="demo", seed=seed)
    run_dir = out / "run"
    overrides = [f"data.root={data_root}", f"train.output_dir={run_dir}", f"train.seed={seed}",
                 "train.device=cpu", "train.deterministic=true"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    cfg = load_config(RECIPE, overrides)
    clear_run(run_dir)
    summary = Trainer(cfg, console=console).fit()

    dataset = load_dataset("market1501", data_root)
    model = load_model(summary["model"])
    distmat = model_distances(model, dataset.query, dataset.gallery, batch_size=64,
                              num_workers=cfg.data.num_workers)
    q_pids, g_pids, q_cams, g_cams = (
        np.array(values) for values in ([r.pid for r in dataset.query], [r.pid for r in dataset.gallery],
                                        [r.camid for r in dataset.query],
                                        [r.camid for r in dataset.gallery]))
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
