"""A training report: one HTML page with PNG plots of the run and of its retrieval results."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.dataset import ImageRecord
from reidkit.retrieval.visualize import plot_cmc, ranked_lists


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The per-step records of a run's ``metrics.jsonl``."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_training(records: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """Loss curves and the dynamic scheduler's weights and decisions; returns the PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in records if "id_loss" in r]
    x = np.array([r["step"] for r in steps])

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in steps], dtype=float)

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(x, series("id_loss"), label="ID loss (sum over branches)", lw=0.8)
    ax.plot(x, series("tp_loss"), label="triplet loss", lw=0.8)
    ax.set(xlabel="step", ylabel="loss", title="Losses", yscale="log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "losses.png")
    plt.close(fig)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 4.5), dpi=110, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot(x, series("w_id"), label="weight of ID loss", lw=0.8)
    top.plot(x, series("w_tp"), label="weight of triplet loss", lw=0.8)
    weights = np.concatenate([series("w_id"), series("w_tp")])
    tiny = np.nanmax(weights) < 0.05  # raw focal weights: a log axis shows them
    top.set(ylabel="weight", title="Dynamic training: weights and decisions",
            yscale="log" if tiny else "linear")
    top.legend()
    top.grid(alpha=0.3)
    joint = np.array([r["objective"] == "joint" for r in steps], dtype=float)
    bottom.fill_between(x, joint, step="post", alpha=0.6, label="joint objective, balanced sampler")
    bottom.set(xlabel="step", yticks=[0, 1], yticklabels=["ID", "joint"])
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(out_dir / "dynamic.png")
    plt.close(fig)
    return ["losses.png", "dynamic.png"]


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    results: dict[str, dict[str, float]],
    cmc: dict[str, np.ndarray],
    metrics_path: str | Path,
    distmat: np.ndarray,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    num_examples: int = 4,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``index.html`` and its PNGs into ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_training(read_metrics(metrics_path), out)
    plot_cmc(cmc, out / "cmc.png")
    picks = np.linspace(0, len(query) - 1, num_examples).round().astype(int).tolist()
    examples = []
    for i, image in enumerate(ranked_lists(distmat, query, gallery, picks, topk=10)):
        name = f"ranked_{i}.png"
        image.save(out / name)
        examples.append(name)

    columns = ["mAP", "rank1", "rank5", "rank10", "mINP"]
    rows = "".join(
        "<tr><td>" + html.escape(name) + "</td>"
        + "".join(f"<td>{100 * values[c]:.1f}</td>" for c in columns) + "</tr>"
        for name, values in results.items())
    figures = "".join(f'<img src="{p}" alt="{p}">' for p in [*plots, "cmc.png"])
    lists = "".join(f'<div><img src="{p}" alt="ranked list"></div>' for p in examples)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}
img{{margin:6px;border:1px solid #eee}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Test results (%)</h2>
<table><tr><th>method</th>{''.join(f'<th>{c}</th>' for c in columns)}</tr>{rows}</table>
<ul>{note_html}</ul>
<h2>Training</h2>{figures}
<h2>Ranked lists</h2><p>Query first; green border: same identity, red: another identity.</p>
{lists}
</body></html>
"""
    page_path = out / "index.html"
    page_path.write_text(page)
    return page_path
