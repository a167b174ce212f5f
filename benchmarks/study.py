"""Do the papers' claims hold? A resumable, multi-seed study on synthetic pedestrians.

Run:  nice -n 15 .venv/bin/python benchmarks/study.py [--scale cpu|gpu] [--seeds 0 1 2]
      .venv/bin/python benchmarks/study.py --report     # only rewrite the report

Every run is one arm (a model and a training scheme) with one seed. It trains until its validation
score (mAP on training identities held out from training, never the test set) has not improved
for ``patience`` evaluations or the step budget ends, and is tested with its best-validation
weights. Each finished run writes ``benchmarks/results/study/<scale>/<arm>__s<seed>.json``; a
rerun skips finished runs, so the study can span sessions and machines (``--scale gpu`` on a lent
GPU), and each scale keeps its own runs and report. The learning rate of every arm is chosen on
validation by a small sweep (factors ``LR_FACTORS`` of its base rate) with the first seed; the
other seeds reuse the chosen rate. The report, ``benchmarks/results/study_<scale>.md`` (+
``study_<scale>_curves.png``), gives per claim the paired per-seed difference of test mAP with its
95 % t-interval and a verdict: "reproduced" (interval above 0), "not reproduced" (interval below
0), otherwise "undecided at this budget"; a claim stays undecided while a run of its trailing arm
stopped at the step cap instead of by early stopping. An MTDnet arm whose training pair accuracy
is still near chance (< 60 %) is reported as not trained.

Protocol, fixed before running: synthetic data of reidkit.data.synthetic with misaligned boxes
(the failure Pyramid targets), domain "a" with 150 training and 100 test identities (Market-1501
protocol for Pyramid; single-shot, one query and one gallery image per test identity in two
cameras, for MTDnet as in its papers' data sets), 20 training identities held out for validation;
domain "b" (other camera styles and clothing) with 30 training identities as the small target of
the cross-domain claim.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.config import Config, load_config  # noqa: E402
from reidkit.data import ImageRecord, ReIDDataset, load_dataset  # noqa: E402
from reidkit.data.synthetic import generate  # noqa: E402
from reidkit.models.io import read_model_meta, save_model  # noqa: E402
from reidkit.retrieval.evaluate import evaluate_model, validation_metrics  # noqa: E402
from reidkit.training.mtdnet_trainer import MTDNetTrainer  # noqa: E402
from reidkit.training.trainer import Trainer  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "study" / "cpu"  # main() sets both from --results and --scale
LR_FACTORS = (0.5, 1.0, 2.0)
VAL_IDS = {"a": 20, "b": 10}  # training identities held out for validation, per domain
quiet = Console(stderr=True, quiet=True)


@dataclass(frozen=True)
class Scale:
    """Model sizes and budgets of one study scale."""

    name: str  # names its result folder, report and source models
    recipes: dict[str, str]  # the recipe each family's runs start from
    pyramid: tuple[str, ...]
    mtdnet: tuple[str, ...]
    pyramid_lr: tuple[float, float]  # backbone, new layers
    mtdnet_lr: float
    eval_every: dict[str, int]
    max_steps: dict[str, int]
    patience: int = 3


SCALES = {
    # ResNet-18 from scratch at 96x48 (6 feature-map rows, one per stripe), batches of 8 ids x 4;
    # CaffeNet MTDnet at 128x72 with 512-wide fc6/fc7, 16 triplets a step. Adam for both: SGD
    # from scratch does not move within a CPU budget.
    "cpu": Scale(
        name="cpu",
        recipes={"pyramid": "demo_cpu", "mtdnet": "mtdnet_synth_cpu"},
        pyramid=("model.backbone=resnet18", "data.height=96", "data.width=48",
                 "sampler.batch_size=32", "sampler.num_ids=8", "sampler.num_instances=4",
                 "optim.name=adam", "optim.weight_decay=5e-4"),
        mtdnet=("data.height=128", "data.width=72", "model.options.fc_width=512",
                "model.options.rank_dim=128", "mtdnet.triplets_per_batch=16",
                "mtdnet.negatives_per_positive=10", "optim.name=adam"),
        pyramid_lr=(3e-4, 1e-3), mtdnet_lr=1e-4,
        eval_every={"pyramid": 50, "mtdnet": 100}, max_steps={"pyramid": 400, "mtdnet": 800},
        patience=2),
    # a few steps of everything: checks the runner end to end
    "smoke": Scale(
        name="smoke",
        recipes={"pyramid": "demo_cpu", "mtdnet": "mtdnet_synth_cpu"},
        pyramid=("model.backbone=resnet18", "data.height=96", "data.width=48",
                 "sampler.batch_size=16", "sampler.num_ids=4", "sampler.num_instances=4",
                 "optim.name=adam"),
        mtdnet=("data.height=128", "data.width=72", "model.options.fc_width=64",
                "model.options.rank_dim=32", "mtdnet.triplets_per_batch=8", "optim.name=adam"),
        pyramid_lr=(3e-4, 1e-3), mtdnet_lr=1e-4,
        eval_every={"pyramid": 2, "mtdnet": 2}, max_steps={"pyramid": 4, "mtdnet": 4}, patience=1),
    # the released recipes at the papers' sizes, from scratch (no ImageNet weights on these
    # machines): ResNet-50 at 384x128, 8 ids x 8 images, SGD; CaffeNet at 227x227 with Caffe
    # initialisation, biases at lr x2, 128 triplets a batch
    "gpu": Scale(
        name="gpu",
        recipes={"pyramid": "_pyramid", "mtdnet": "_mtdnet"},
        pyramid=("model.backbone=resnet50", "data.num_workers=8"),
        mtdnet=("data.num_workers=8",),
        pyramid_lr=(0.01, 0.1), mtdnet_lr=1e-3,
        eval_every={"pyramid": 200, "mtdnet": 500}, max_steps={"pyramid": 6000, "mtdnet": 20000}),
}
# the cpu study with room to converge: most cpu runs were still improving at their cap
SCALES["cpu-long"] = replace(SCALES["cpu"], name="cpu-long",
                             max_steps={"pyramid": 1500, "mtdnet": 3000}, patience=3)


@dataclass(frozen=True)
class Arm:
    name: str
    family: str  # pyramid | mtdnet
    label: str
    overrides: tuple[str, ...] = ()
    data: str = "a"  # synthetic domain
    init_from: str | None = None  # arm whose model (same seed) this one starts from
    cross_domain: bool = False


PYRAMID_RELEASED = ("dynamic.combine=sum", "dynamic.sampler=balanced")
ARMS = [
    Arm("pyramid", "pyramid", "Pyramid, dynamic as released (sum, balanced)", PYRAMID_RELEASED),
    Arm("stripes", "pyramid", "PCB-style stripes, same training",
        ("model.name=stripes", *PYRAMID_RELEASED)),
    Arm("global", "pyramid", "global pooling baseline, same training",
        ("model.name=baseline", "model.options={last_stride: 1}", *PYRAMID_RELEASED)),
    Arm("pyramid-paper", "pyramid", "Pyramid, dynamic as the paper (focal, switch)",
        ("dynamic.combine=focal", "dynamic.sampler=switch")),
    Arm("pyramid-fixed", "pyramid", "Pyramid, fixed 1:1 weights", ("dynamic.combine=fixed",)),
    Arm("pyramid-id", "pyramid", "Pyramid, ID loss only",
        ("dynamic.combine=fixed", "dynamic.fixed_weights={id: 1.0, tp: 0.0}")),
    Arm("pyramid-tp", "pyramid", "Pyramid, triplet loss only",
        ("dynamic.combine=fixed", "dynamic.fixed_weights={id: 0.0, tp: 1.0}")),
    Arm("mtd", "mtdnet", "MTDnet, ranked by pair scores", ("model.options.variant=mtd",)),
    Arm("cls", "mtdnet", "verification only (cls)", ("model.options.variant=cls",)),
    Arm("rnk", "mtdnet", "ranking only, deep CaffeNet (rnk)", ("model.options.variant=rnk",)),
    Arm("target-only", "mtdnet", "target b from scratch", ("model.options.variant=mtd",), "b"),
    Arm("finetune", "mtdnet", "target b fine-tuned from the source model",
        ("model.options.variant=mtd",), "b", init_from="mtd"),
    Arm("cross", "mtdnet", "target b cross-domain (fine-tune + contrastive)",
        ("model.options.variant=mtd",), "b", init_from="mtd", cross_domain=True),
]
ARM = {a.name: a for a in ARMS}
# (claim, better arm, worse arm, test key): the paper's claim is "better > worse"
CLAIMS = [
    ("Pyramid beats PCB-style stripes", "pyramid", "stripes", "mAP"),
    ("Pyramid beats the global baseline", "pyramid", "global", "mAP"),
    ("dynamic (released) beats fixed 1:1", "pyramid", "pyramid-fixed", "mAP"),
    ("dynamic (paper) beats fixed 1:1", "pyramid-paper", "pyramid-fixed", "mAP"),
    ("dynamic (released) beats ID only", "pyramid", "pyramid-id", "mAP"),
    ("dynamic (released) beats triplet only", "pyramid", "pyramid-tp", "mAP"),
    ("MTDnet (pair scores) beats verification only", "mtd", "cls", "mAP"),
    ("MTDnet (pair scores) beats ranking only (deep rnk)", "mtd", "rnk", "mAP"),
    ("MTDnet (pair scores) beats its own ranking branch (MTDtrp)", "mtd", "mtd:embedding", "mAP"),
    ("cross-domain beats fine-tuning from the source", "cross", "finetune", "mAP"),
    ("cross-domain beats target-only training", "cross", "target-only", "mAP"),
]


# ----------------------------------------------------------------------------------------- data
def make_data(work: Path) -> dict[str, Path]:
    """The two synthetic domains (generated once; an existing folder is reused)."""
    roots = {"a": work / "data_a", "b": work / "data_b"}
    specs = {"a": dict(preset="demo", domain="a", seed=21),
             "b": dict(preset="demo", num_train_ids=30, num_test_ids=100, images_per_id=8,
                       num_cams=4, num_distractors=0, num_junk=0, domain="b", seed=22)}
    for key, root in roots.items():
        if not (root / "bounding_box_test").is_dir():
            generate(root, **specs[key])
    return roots


def single_shot(dataset: ReIDDataset) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """One query (its first camera) and one gallery image (another camera) per test identity."""
    first: dict[int, ImageRecord] = {}
    for r in dataset.query + dataset.gallery:
        if r.pid > 0:
            first.setdefault(r.pid, r)
    other: dict[int, ImageRecord] = {}
    for r in dataset.query + dataset.gallery:
        if r.pid in first and r.camid != first[r.pid].camid:
            other.setdefault(r.pid, r)
    pids = sorted(set(first) & set(other))
    return [first[p] for p in pids], [other[p] for p in pids]


# ----------------------------------------------------------------------------------------- runs
def config_for(arm: Arm, seed: int, lr_factor: float, scale: Scale, roots: dict[str, Path],
               work: Path, source_factor: float = 1.0) -> Config:
    common = [f"data.root={roots[arm.data]}", f"train.seed={seed}", "train.device=auto",
              f"train.output_dir={work / 'runs' / f'{arm.name}__s{seed}'}",
              f"data.val_ids={VAL_IDS[arm.data]}",
              "data.num_workers=0", "train.epochs=1", "data.dataset=market1501"]
    if arm.family == "pyramid":
        lr, new_lr = (v * lr_factor for v in scale.pyramid_lr)
        return load_config(scale.recipes["pyramid"], [
            *common, *scale.pyramid, f"optim.lr={lr}", f"optim.new_lr={new_lr}",
            "optim.warmup_epochs=0", "optim.milestones=[]", "data.flip_p=0.5", "data.erase_p=0.2",
            "data.erase_max_area=0.4", "data.pad=0", "data.interpolation=bicubic",
            "loss.triplet_on=branches", *arm.overrides])
    lr = scale.mtdnet_lr * lr_factor
    extra = [f"optim.lr={lr}", f"optim.new_lr={lr}", "mtdnet.triplet_sampling=all-pairs"]
    if arm.init_from:
        source = model_file(work, scale, arm.init_from, seed, source_factor)
        extra.append(f"mtdnet.init_checkpoint={source}")
    if arm.cross_domain:  # the authors' pairing (Nets/MTDnet-cross)
        extra += ["mtdnet.cross_domain=true", "mtdnet.source_dataset=market1501",
                  f"mtdnet.source_root={roots['a']}", "mtdnet.contrastive_pairing=pairs"]
    return load_config(scale.recipes["mtdnet"], [*common, *scale.mtdnet, *extra, *arm.overrides])


def model_file(work: Path, scale: Scale, arm: str, seed: int, lr_factor: float = 1.0) -> Path:
    """A source model: one per scale, seed and learning-rate factor (sweep runs keep theirs)."""
    tag = "" if lr_factor == 1.0 else f"__lr{lr_factor:g}"
    return work / "models" / scale.name / f"{arm}{tag}__s{seed}.safetensors"


@dataclass
class RunResult:
    arm: str
    seed: int
    lr_factor: float
    best_step: int
    stopped_step: int
    best_val: float
    curve: list[dict[str, float]]
    test: dict[str, dict[str, float]]
    train_pair_accuracy: float | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def train_run(arm: Arm, seed: int, lr_factor: float, scale: Scale, roots: dict[str, Path],
              work: Path, source_factor: float = 1.0) -> RunResult:
    cfg = config_for(arm, seed, lr_factor, scale, roots, work, source_factor)
    trainer = (Trainer if arm.family == "pyramid" else MTDNetTrainer)(cfg, console=quiet)
    if arm.family == "mtdnet":  # single-shot validation: pair scoring is quadratic in the split
        trainer.val = single_shot(ReIDDataset("val", [], *trainer.val))
    every, budget = scale.eval_every[arm.family], scale.max_steps[arm.family]
    curve: list[dict[str, float]] = []
    records: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    started = time.perf_counter()
    while trainer.step < budget:
        trainer.model_in_training.train()
        for _ in range(every):
            records.append(trainer.train_step())
        val = trainer.evaluate(*trainer.val)
        curve.append({"step": trainer.step, **{k: round(v, 5) for k, v in val.items()}})
        if val["mAP"] > best[0]:
            state = copy.deepcopy(trainer.saved_model.state_dict())
            best = (val["mAP"], trainer.step, state)
        elif trainer.step - best[1] >= scale.patience * every:
            break
    seconds = time.perf_counter() - started
    trainer.saved_model.load_state_dict(best[2])
    for stream in trainer.streams.values():
        stream.close()
    test = test_metrics(arm, trainer, roots)
    if arm.name == "mtd":  # the source model of the cross-domain arms
        path = model_file(work, scale, arm.name, seed, lr_factor)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, trainer.saved_model, {"step": best[1], "commit": code_version()})
    return RunResult(arm.name, seed, lr_factor, best[1], trainer.step, round(best[0], 5), curve,
                     test, pair_accuracy(trainer) if arm.family == "mtdnet" else None,
                     round(seconds, 1), {"budget": budget, "eval_every": every,
                                         "patience": scale.patience, **run_facts(scale, trainer),
                                         **dynamic_summary(records),
                                         **source_of(arm, scale, work, seed, source_factor)})


def run_facts(scale: Scale, trainer: Any) -> dict[str, Any]:
    """Where and on what code a run ran."""
    return {"scale": scale.name, "commit": code_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {trainer.device.type}",
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def source_of(arm: Arm, scale: Scale, work: Path, seed: int, factor: float) -> dict[str, Any]:
    """Which source model a fine-tuned arm started from (lr factor, best step, code version)."""
    if not arm.init_from:
        return {}
    _, meta = read_model_meta(model_file(work, scale, arm.init_from, seed, factor))
    return {"source": {"arm": arm.init_from, "lr_factor": factor, "step": meta.get("step"),
                       "commit": meta.get("commit")}}


def dynamic_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the dynamic rule chose: steps per objective/sampler and the median joint weights."""
    if not records or "objective" not in records[0]:
        return {}
    joint = [r for r in records if r["objective"] == "joint"]
    steps = Counter(f"{r['objective']}/{r['sampler']}" for r in records)
    weights = {t: statistics.median(r[f"w_{t}"] for r in joint) for t in ("id", "tp")} if joint else None
    return {"steps": dict(sorted(steps.items())), "median_joint_weights": weights}


@functools.cache
def code_version() -> str | None:
    """The commit the run's code came from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def test_metrics(arm: Arm, trainer: Any, roots: dict[str, Path]) -> dict[str, dict[str, float]]:
    dataset = load_dataset("market1501", roots[arm.data])
    if arm.family == "pyramid":
        return {"default": trainer.evaluate(dataset.query, dataset.gallery)}
    query, gallery = single_shot(dataset)
    model = trainer.target.eval()
    out = {"default": trainer.evaluate(query, gallery)}
    if model.spec.ranks_by == "pairs" and model.spec.feature_dim:  # MTDtrp: its own embedding
        out["embedding"] = validation_metrics(evaluate_model(
            model, query, gallery, mirror=True, device=trainer.device, ranks_by="embedding"))
    return out


@torch.no_grad()
def pair_accuracy(trainer: MTDNetTrainer, batches: int = 4) -> float:
    """Training-batch accuracy in eval mode: same/different for verifiers, d_ap < d_an else."""
    model = trainer.target.eval()
    correct = total = 0
    for _ in range(batches):
        out = model.forward_triplets(*trainer._next_triplets("target"))
        if out.pos_logits is not None:
            correct += int((out.pos_logits.argmax(1) == 1).sum() + (out.neg_logits.argmax(1) == 0).sum())
            total += 2 * len(out.pos_logits)
        else:
            d_ap = (out.anchor - out.positive).pow(2).sum(1)
            d_an = (out.anchor - out.negative).pow(2).sum(1)
            correct += int((d_ap < d_an).sum())
            total += len(d_ap)
    for stream in trainer.streams.values():
        stream.close()
    return round(correct / total, 4)


# ----------------------------------------------------------------------------------------- driver
def result_path(arm: str, seed: int, lr_factor: float | None = None) -> Path:
    tag = "" if lr_factor is None else f"__lr{lr_factor:g}"
    return RUNS / f"{arm}{tag}__s{seed}.json"


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def save(result: RunResult, path: Path) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.__dict__, indent=1))
    tmp.replace(path)


def chosen_factor(arm: Arm, first_seed: int, scale: Scale, roots: dict[str, Path], work: Path,
                  sweep: bool) -> float:
    """The learning-rate factor with the best validation mAP on the first seed (sweeping it)."""
    if not sweep:
        return 1.0
    scores = {}
    for factor in LR_FACTORS:
        path = result_path(arm.name, first_seed, factor)
        done = load(path)
        if done is None:
            source_factor = ensure_source(arm, first_seed, scale, roots, work, sweep)
            print(f"[study] sweep {arm.name} lr x{factor:g} seed {first_seed}", flush=True)
            save(train_run(arm, first_seed, factor, scale, roots, work, source_factor), path)
            done = load(path)
        scores[factor] = done["best_val"]
    return max(scores, key=lambda f: (scores[f], -abs(math.log(f))))


def ensure_source(arm: Arm, seed: int, scale: Scale, roots: dict[str, Path], work: Path,
                  sweep: bool) -> float:
    """The learning-rate factor of the source model a fine-tuned arm starts from (its chosen
    one), training that model if this machine lacks it."""
    if not arm.init_from:
        return 1.0
    source = ARM[arm.init_from]
    factor = chosen_factor(source, FIRST_SEED, scale, roots, work, sweep)
    if not model_file(work, scale, source.name, seed, factor).is_file():
        print(f"[study] source model {source.name} seed {seed}", flush=True)
        result = train_run(source, seed, factor, scale, roots, work)
        if load(result_path(source.name, seed)) is None:
            save(result, result_path(source.name, seed))
    return factor


def run_study(args: argparse.Namespace) -> None:
    scale = SCALES[args.scale]
    roots = make_data(args.work)
    arms = [ARM[a] for a in args.arms] if args.arms else ARMS
    for seed in args.seeds:
        for arm in arms:
            path = result_path(arm.name, seed)
            if path.is_file():
                continue
            factor = chosen_factor(arm, args.seeds[0], scale, roots, args.work, not args.no_sweep)
            swept = load(result_path(arm.name, seed, factor))
            if swept is not None:
                path.write_text(json.dumps(swept, indent=1))
            else:
                source_factor = ensure_source(arm, seed, scale, roots, args.work, not args.no_sweep)
                print(f"[study] {arm.name} seed {seed} (lr x{factor:g})", flush=True)
                save(train_run(arm, seed, factor, scale, roots, args.work, source_factor), path)
            write_report(args)


# ----------------------------------------------------------------------------------------- report
def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of paired differences."""
    from scipy.stats import t

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, -math.inf, math.inf
    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def metric(result: dict[str, Any], view: str, key: str) -> float:
    return 100 * result["test"][view][key]


def verdict(num_seeds: int, lo: float, hi: float, untrained: list[str],
            capped: tuple[int, int] = (0, 0)) -> str:
    """A claim's verdict from its paired 95 % interval [lo, hi]: decided only with 3 seeds or more,
    every arm trained, and the trailing arm's runs all ended by early stopping; ``capped`` is (the
    trailing arm's runs that reached the step cap, its runs)."""
    if untrained:
        return f"undecided: {', '.join(untrained)} not trained (pair accuracy < 60 %)"
    if num_seeds < 3:
        return f"undecided at this budget ({num_seeds} seed{'s' * (num_seeds > 1)} so far)"
    lean = "the claim holds" if lo > 0 else "the opposite holds" if hi < 0 else None
    if lean and capped[0]:  # the trailing arm was still improving: it may catch up
        return (f"undecided at this budget: at the cap {lean}, but the trailing arm stopped at "
                f"its step cap in {capped[0]} of {capped[1]} runs")
    if lean == "the claim holds":
        return "**reproduced**"
    if lean:
        return "**not reproduced** (the opposite holds)"
    return "undecided at this budget"


def at_cap(result: dict[str, Any]) -> bool:
    """Stopped by its step cap while still improving (not by running out of patience there)."""
    extra = result["extra"]
    # runs from before patience was recorded are all cpu-scale runs
    patience = extra.get("patience", SCALES["cpu"].patience) * extra.get("eval_every", 1)
    stalled = result["stopped_step"] - result["best_step"] >= patience
    return result["stopped_step"] >= extra.get("budget", math.inf) and not stalled


def trained(result: dict[str, Any]) -> bool:
    acc = result.get("train_pair_accuracy")
    return acc is None or acc >= 0.6


def write_report(args: argparse.Namespace) -> None:
    runs = {(r["arm"], r["seed"]): r for p in sorted(RUNS.glob("*.json")) if "__lr" not in p.name
            for r in [json.loads(p.read_text())]}
    swept = any(RUNS.glob("*__lr*"))
    lines = ["## Study: do the papers' claims hold? (synthetic pedestrians)", "",
             f"Commands: {'; then '.join(f'`{c}`' for c in study_commands(runs, args.scale, swept))} "
             "(resumable: finished runs are skipped; `--report` rewrites this page from "
             f"`{_shown(RUNS)}/`).  ", machine_line(runs, args.scale),
             "", PROTOCOL.format(**_scale_facts(SCALES[args.scale], swept)), "",
             "### Verdicts (paired per-seed difference of test mAP, 95 % t-interval)", "",
             "| claim | seeds | mean diff (pp) | 95 % CI | verdict |", "|---|---|---|---|---|"]
    for claim, better, worse, key in CLAIMS:
        b_arm, _, b_view = better.partition(":")
        w_arm, _, w_view = worse.partition(":")
        seeds = sorted(s for (a, s) in runs if a == b_arm and (w_arm, s) in runs)
        if not seeds:
            lines.append(f"| {claim} | 0 | | | not run yet |")
            continue
        pairs = [(runs[(b_arm, s)], runs[(w_arm, s)]) for s in seeds]
        diffs = [metric(b, b_view or "default", key) - metric(w, w_view or "default", key)
                 for b, w in pairs]
        mean, lo, hi = t_interval(diffs)
        untrained = sorted({r["arm"] for pair in pairs for r in pair if not trained(r)})
        trailing = [w if mean >= 0 else b for b, w in pairs]
        capped = (sum(map(at_cap, trailing)), len(trailing))
        lines.append(f"| {claim} | {len(seeds)} | {mean:+.1f} | [{lo:+.1f}, {hi:+.1f}] | "
                     f"{verdict(len(seeds), lo, hi, untrained, capped)} |")
    lines += ["", f"Scope: a verdict holds for this scale only (the protocol above: networks from "
              f"scratch on synthetic data{', learning rates not swept' * (not swept)}). "
              f"{sum(map(at_cap, runs.values()))} of {len(runs)} runs reached their step cap "
              "before their patience ran out; a claim whose trailing arm has such a run stays undecided, "
              "since longer training may let it catch up."]
    lines += ["", "### Arms (test metrics at the best validation step; mean ± sd over seeds)", "",
              "| arm | seeds | lr x | test mAP | test rank-1 | best val mAP | best step | "
              "stopped at | stopped early | train pair acc | train s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    views = [(a.name, "default", a.label) for a in ARMS]
    views.insert(8, ("mtd", "embedding", "MTDtrp: the MTDnet model ranked by its embedding"))
    for name, view, label in views:
        rs = [r for (a, _), r in sorted(runs.items()) if a == name and view in r["test"]]
        if not rs:
            continue
        good = [r for r in rs if trained(r)]  # an untrained run's test numbers are no result
        lines.append("| " + " | ".join([
            label, f"{len(rs)}{f' ({len(rs) - len(good)} not trained)' * (len(good) < len(rs))}",
            f"{rs[0]['lr_factor']:g}",
            *([_mean_sd([metric(r, view, k) for r in good]) for k in ("mAP", "rank1")] if good
              else ["not trained", "not trained"]),
            _mean_sd([100 * r["best_val"] for r in rs]),
            _mean_sd([r["best_step"] for r in rs], 0), _mean_sd([r["stopped_step"] for r in rs], 0),
            f"{sum(not at_cap(r) for r in rs)}/{len(rs)}",
            "-" if rs[0]["train_pair_accuracy"] is None
            else _mean_sd([100 * r["train_pair_accuracy"] for r in rs]),
            _mean_sd([r["seconds"] for r in rs], 0)]) + " |")
    lines += rule_table(runs)
    if runs:
        curves = f"study_{args.scale}_curves.png"
        plot_curves(runs, RESULTS / curves)
        lines += ["", "Validation mAP against training steps (mean over seeds up to the last "
                  f"step they all reached; faint: each seed): ![learning curves]({curves})"]
    path = report_path(args.scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")  # two runners may share the folder
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def rule_table(runs: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """What the dynamic rule chose, per Pyramid arm whose runs recorded it."""
    kinds = ("id/balanced", "id/random", "joint/balanced")
    rows = []
    for arm in ARMS:
        rs = [r["extra"] for (a, _), r in sorted(runs.items())
              if a == arm.name and r["extra"].get("steps")]
        if not rs:
            continue
        shares = [statistics.fmean(e["steps"].get(k, 0) / sum(e["steps"].values()) for e in rs)
                  for k in kinds]
        joint = [e["median_joint_weights"] for e in rs if e["median_joint_weights"]]
        weights = " / ".join(f"{statistics.median(w[t] for w in joint):.2g}"
                             for t in ("id", "tp")) if joint else "-"
        cells = [arm.label, str(len(rs)), *(f"{100 * v:.0f} %" for v in shares), weights]
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "### What the dynamic rule chose (share of training steps; median weights of "
            "the joint steps)", "", "| arm | seeds | ID, balanced | ID, random | joint | "
            "weights id / tp |", "|---|---|---|---|---|---|", *rows]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report_path(scale: str) -> Path:
    return RESULTS / f"study_{scale}.md"


PROTOCOL = (
    "Protocol (fixed before running): synthetic pedestrians with misaligned boxes; domain a: 150 "
    "training ids (20 held out for validation), 100 test ids; Pyramid arms tested with the "
    "Market-1501 protocol, MTDnet arms single-shot (one query and one gallery image in another "
    "camera per test id, 100 ids: chance rank-1 1 %). Domain b (other cameras and clothing): 30 "
    "training ids (10 of them held out for validation), 100 test ids, the cross-domain target. Pyramid: "
    "{pyramid}; MTDnet: {mtdnet}. Every run validates every {pe} / {me} steps and stops after "
    "{patience} evaluations without a better validation mAP (at most {ps} / {ms} steps); the "
    "test uses the best-validation weights. {lr_rule} Verdict rule: reproduced when the 95 % interval "
    "of the paired difference lies above 0, not reproduced when below, otherwise undecided; "
    "fewer than 3 seeds is undecided, and so is a claim whose trailing arm stopped at its step cap "
    "before its patience ran out (a rule added after the first runs, when most of them hit the cap).")


def study_commands(runs: dict[tuple[str, int], dict[str, Any]], scale: str, swept: bool) -> list[str]:
    """The runner invocations that give these runs: the seeds most arms have, over the arms run
    so far, then each further set of seeds with the arms that have it."""
    seeds_of: dict[str, frozenset[int]] = {}
    for arm, seed in runs:
        seeds_of[arm] = seeds_of.get(arm, frozenset()) | {seed}
    sets = list(seeds_of.values())
    base = max(sets, key=lambda s: (sets.count(s), -len(s)), default=frozenset())
    arms = [a.name for a in ARMS if a.name in seeds_of]
    if not arms:
        return []
    full = [a for a in arms if base <= seeds_of[a]]
    rest: dict[frozenset[int], list[str]] = defaultdict(list)  # further seeds, or other sets
    for arm in arms:
        rest[seeds_of[arm] - base if arm in full else seeds_of[arm]].append(arm)
    command = f"nice -n 15 .venv/bin/python benchmarks/study.py --scale {scale}"
    command += "" if swept else " --no-sweep"
    first = f"{command} --seeds {_seed_list(base)}"
    first += "" if len(full) == len(ARMS) else f" --arms {' '.join(full)}"
    return [first] + [f"{command} --seeds {_seed_list(s)} --arms {' '.join(a)}"
                      for s, a in rest.items() if s]


def _seed_list(seeds: frozenset[int]) -> str:
    return " ".join(map(str, sorted(seeds)))


def machine_line(runs: dict[tuple[str, int], dict[str, Any]], scale: str) -> str:
    """Where the runs ran, as they recorded it, and where this report was written."""
    def where(extra: dict[str, Any]) -> str:
        if "machine" not in extra:
            return "not recorded"
        return f"{extra['machine']}, torch {extra['torch']}, {extra['threads']} thread(s)"
    counts = Counter(where(r["extra"]) for r in runs.values())
    line = "Runs on: " + "; ".join(f"{w} ({n} run{'s' * (n > 1)})" for w, n in sorted(counts.items()))
    if scale.startswith("cpu"):
        line += ", niced in the background while other work shared the cores"
    return (f"{line}. Report written on {platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}.")


def _scale_facts(s: Scale, swept: bool) -> dict[str, Any]:
    factors = "/".join(f"{f:g}" for f in LR_FACTORS)
    lr_rule = (f"Learning rate per arm: x{factors} of the base rate, chosen on validation with the "
               "first seed." if swept else
               f"Learning rates: the base rates for every arm; the runner's sweep (x{factors}, "
               "chosen on validation) was not run at this budget.")
    return {"lr_rule": lr_rule, "pyramid": ", ".join(s.pyramid), "mtdnet": ", ".join(s.mtdnet),
            "pe": s.eval_every["pyramid"], "me": s.eval_every["mtdnet"], "patience": s.patience,
            "ps": s.max_steps["pyramid"], "ms": s.max_steps["mtdnet"]}


def _mean_sd(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mean_curve(curves: list[list[dict[str, float]]]) -> tuple[list[int], list[float]]:
    """Mean validation mAP over seeds at the steps every seed reached: a seed that stopped early
    would make a mean over the seeds still running jump."""
    common = sorted(set.intersection(*({c["step"] for c in curve} for curve in curves)))
    return common, [statistics.fmean(c["mAP"] for curve in curves for c in curve if c["step"] == s)
                    for s in common]


def plot_curves(runs: dict[tuple[str, int], dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, family in zip(axes, ("pyramid", "mtdnet"), strict=True):
        for arm in (a for a in ARMS if a.family == family):
            curves = [r["curve"] for (a, _), r in runs.items() if a == arm.name]
            if not curves:
                continue
            common, mean = mean_curve(curves)
            line, = ax.plot(common, [100 * m for m in mean], marker=".",
                            label=f"{arm.name} ({len(curves)})")
            for curve in curves:
                ax.plot([c["step"] for c in curve], [100 * c["mAP"] for c in curve],
                        color=line.get_color(), alpha=0.25, linewidth=0.8)
        ax.set(title=f"{family}: validation mAP", xlabel="training step", ylabel="mAP (%)")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    plt.close(fig)


FIRST_SEED = 0


def main() -> None:
    global FIRST_SEED, RESULTS, RUNS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARM), help="only these arms")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reidkit-study"),
                        help="data and model files (results go to benchmarks/results/study/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sweep", action="store_true", help="base learning rates only")
    parser.add_argument("--report", action="store_true", help="only rewrite the report")
    parser.add_argument("--results", type=Path, help="where study_<scale>.md and "
                        "study/<scale>/<run>.json go (default benchmarks/results, <work>/results "
                        "for the smoke scale)")
    args = parser.parse_args()
    if args.results is None:
        args.results = args.work / "results" if args.scale == "smoke" else RESULTS
    RESULTS, RUNS = args.results, args.results / "study" / args.scale
    FIRST_SEED = args.seeds[0]
    torch.set_num_threads(args.threads)
    if not args.report:
        run_study(args)
    write_report(args)
    print(report_path(args.scale).read_text())


if __name__ == "__main__":
    main()
