"""Multi-split evaluation protocols of the small re-ID data sets (MTDnet's tables).

VIPeR, CUHK01, QMUL i-LIDS and PRID2011 come with 10 seeded train/test splits and CUHK03's classic
protocol with 20; a result is the single-shot CMC at ranks 1/5/10/20 averaged over the splits.
:func:`run_protocol` trains one model per split (or evaluates given model files) and averages;
:func:`evaluate_split` scores one model on one split's query/gallery.

The parsers give query and gallery images different camera ids (camera A vs B; CUHK03's two views
of a camera pair), so the ``market1501`` protocol removes nothing from these galleries. CUHK03 is
evaluated single-gallery-shot (``cuhk03`` protocol: one gallery image per identity, 10 seeded
draws averaged), as in its classic protocol.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch import nn

from reidkit.config import Config
from reidkit.data import ReIDDataset, load_dataset
from reidkit.models.io import load_model
from reidkit.retrieval.evaluate import evaluate_model
from reidkit.training import build_trainer
from reidkit.training.base import STATE_FILE, resolve_device

RANKS = (1, 5, 10, 20)


@dataclass(frozen=True)
class SplitResult:
    """One split's scores: ``cmc[k]`` is the rank-k matching rate in [0, 1]."""

    split: int
    cmc: dict[int, float]
    mAP: float
    num_queries: int
    model: str | None = None


@dataclass
class ProtocolResult:
    """Per-split results of one data set and their mean and standard deviation over splits."""

    dataset: str
    splits: list[SplitResult]
    ranks: tuple[int, ...] = RANKS
    notes: list[str] = field(default_factory=list)

    def _column(self, key: str) -> np.ndarray:
        if not self.splits:
            raise ValueError("the protocol result holds no split")
        if key == "mAP":
            return np.array([s.mAP for s in self.splits])
        return np.array([s.cmc[int(key.removeprefix("rank"))] for s in self.splits])

    @property
    def keys(self) -> list[str]:
        return [f"rank{r}" for r in self.ranks] + ["mAP"]

    @property
    def mean(self) -> dict[str, float]:
        """Mean over splits of each rank-k rate and of mAP (fractions in [0, 1])."""
        return {k: float(self._column(k).mean()) for k in self.keys}

    @property
    def std(self) -> dict[str, float]:
        """Population standard deviation over splits (0 for a single split)."""
        return {k: float(self._column(k).std()) for k in self.keys}

    def as_markdown(self) -> str:
        """A table with one row per split and a mean +- std row, in percent."""
        head = ["split", *(f"rank-{r}" for r in self.ranks), "mAP"]
        lines = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
        for s in self.splits:
            cells = [f"{100 * s.cmc[r]:.2f}" for r in self.ranks] + [f"{100 * s.mAP:.2f}"]
            lines.append(f"| {s.split} | {' | '.join(cells)} |")
        mean, std = self.mean, self.std
        cells = [f"**{100 * mean[k]:.2f}** ± {100 * std[k]:.2f}" for k in self.keys]
        lines.append(f"| mean ({len(self.splits)} splits) | {' | '.join(cells)} |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the splits, mean and std (fractions), data set and notes."""
        return {"dataset": self.dataset, "ranks": list(self.ranks),
                "splits": [{**asdict(s), "cmc": {str(k): v for k, v in s.cmc.items()}}
                           for s in self.splits],
                "mean": self.mean, "std": self.std, "notes": self.notes}


def evaluate_split(
    model: nn.Module,
    dataset: ReIDDataset,
    *,
    size: Sequence[int] | None = None,
    ranks: Sequence[int] = RANKS,
    **ranking: Any,
) -> SplitResult:
    """Single-shot CMC at ``ranks`` and mAP of ``model`` on ``dataset``'s query and gallery.

    Images are fed at ``size`` (default: the model's input size) and ranked as the model's spec
    says (:func:`~reidkit.retrieval.evaluate.evaluate_model`, which takes ``ranking``'s
    ``batch_size``, ``num_workers``, ``device``, ``mirror``); ``mirror`` defaults to on, as the
    MTDnet authors' scripts rank embeddings.
    """
    result = evaluate_model(model, dataset, size=size, max_rank=max(ranks),
                            **{"mirror": True, **ranking})
    max_rank = len(result.cmc)
    # beyond the gallery's size every valid query has matched
    cmc = {int(r): float(result.cmc[min(r, max_rank) - 1]) for r in ranks}
    return SplitResult(dataset.split, cmc, float(result.mAP), result.num_valid_queries)


def run_protocol(
    cfg: Config,
    splits: Sequence[int] | None = None,
    console: Console | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> ProtocolResult:
    """Train and evaluate ``cfg`` on every split of its data set (or on ``splits``); average.

    Split ``i`` sets ``data.options.split=i`` and trains into ``<train.output_dir>/split<i>``
    (MTDnet recipes with :class:`MTDNetTrainer`, others with :class:`Trainer`). With
    ``checkpoint`` nothing is trained: the model file is evaluated on every split; a path
    holding ``{split}`` names one file per split. ``resume`` continues each split's run where
    it stopped (a finished split is only evaluated; a split never started is trained). The table
    is written to ``<train.output_dir>/protocol.json`` and ``protocol.md``.
    """
    console = console or Console(stderr=True)
    c = cfg.data
    first = load_dataset(c.dataset, c.root, **{**c.options, "split": 0})
    chosen = list(range(first.num_splits)) if splits is None else [int(s) for s in splits]
    bad = [s for s in chosen if not 0 <= s < first.num_splits]
    if bad or not chosen:
        raise ValueError(f"{c.dataset} has splits 0..{first.num_splits - 1}; got {bad or 'none'}")
    out = Path(cfg.train.output_dir)
    device = resolve_device(cfg.train.device)
    results: list[SplitResult] = []
    for split in chosen:
        split_cfg = cfg.model_copy(deep=True)
        split_cfg.data.options = {**c.options, "split": split}
        split_cfg.train.output_dir = str(out / f"split{split}")
        if checkpoint is None:
            started = (Path(split_cfg.train.output_dir) / STATE_FILE).is_file()
            trainer = build_trainer(split_cfg, resume=resume and started, console=console)
            path = str(trainer.fit()["model"])
        else:
            path = str(checkpoint).format(split=split)
        model = load_model(path, map_location=device)
        dataset = load_dataset(c.dataset, c.root, **split_cfg.data.options)
        result = evaluate_split(model, dataset, size=(c.height, c.width),
                                batch_size=cfg.sampler.batch_size, num_workers=c.num_workers,
                                device=device)
        result = SplitResult(result.split, result.cmc, result.mAP, result.num_queries, path)
        results.append(result)
        console.print(f"{c.dataset} split {split}: rank-1 {100 * result.cmc[1]:.2f}% "
                      f"mAP {100 * result.mAP:.2f}% ({result.num_queries} queries)")
    table = ProtocolResult(first.name, results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps(table.as_dict(), indent=2))
    (out / "protocol.md").write_text(table.as_markdown() + "\n")
    return table
