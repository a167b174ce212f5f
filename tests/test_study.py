"""The study runner (benchmarks/study.py): paired t-intervals, the verdict rule, the report, configs."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "study", Path(__file__).resolve().parents[1] / "benchmarks" / "study.py")
study = importlib.util.module_from_spec(SPEC)
sys.modules["study"] = study  # its dataclasses look their module up
SPEC.loader.exec_module(study)


def test_t_interval_by_hand():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653, half width 4.302653 / sqrt(3)
    mean, lo, hi = study.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert study.t_interval([5.0]) == (5.0, -math.inf, math.inf)  # one seed: no interval


def test_verdicts_need_three_seeds_trained_arms_and_an_interval_off_zero():
    assert study.verdict(3, 0.5, 4.0, []) == "**reproduced**"
    assert study.verdict(5, -4.0, -0.1, []) == "**not reproduced** (the opposite holds)"
    assert study.verdict(3, -1.0, 2.0, []) == "undecided at this budget"
    assert study.verdict(2, 0.5, 4.0, []) == "undecided at this budget (2 seeds so far)"
    assert study.verdict(1, -math.inf, math.inf, []) == "undecided at this budget (1 seed so far)"
    assert study.verdict(3, 0.5, 4.0, ["target-only"]).startswith("undecided: target-only not trained")


def test_an_mtdnet_arm_at_chance_counts_as_not_trained():
    assert not study.trained({"train_pair_accuracy": 0.5})
    assert study.trained({"train_pair_accuracy": 0.85}) and study.trained({"train_pair_accuracy": None})


def test_a_claim_whose_trailing_arm_hit_its_step_cap_stays_undecided():
    # the interval alone would say "not reproduced"; a trailing arm still improving may catch up
    assert study.verdict(3, -4.0, -1.0, [], (3, 3)) == (
        "undecided at this budget: at the cap the opposite holds, but the trailing arm stopped at "
        "its step cap in 3 of 3 runs")
    assert study.verdict(3, 1.0, 4.0, [], (1, 3)).startswith("undecided at this budget: at the cap the claim")
    assert study.verdict(3, -1.0, 4.0, [], (2, 3)) == "undecided at this budget"
    assert study.verdict(3, 1.0, 4.0, [], (0, 3)) == "**reproduced**"
    extra = {"budget": 400, "eval_every": 50, "patience": 2}
    assert study.at_cap({"stopped_step": 400, "best_step": 350, "extra": extra})
    assert not study.at_cap({"stopped_step": 350, "best_step": 250, "extra": extra})
    # best at 300, no better at 350 and 400: patience ran out exactly at the cap
    assert not study.at_cap({"stopped_step": 400, "best_step": 300, "extra": extra})


def fake_run(arm, seed, m_ap=0.5, pair_acc=None, stopped=400):
    return {"arm": arm, "seed": seed, "lr_factor": 1.0, "best_step": stopped - 50, "stopped_step": stopped,
            "best_val": 0.6, "curve": [{"step": 300, "mAP": 0.6}],
            "test": {"default": {"mAP": m_ap, "rank1": m_ap}}, "train_pair_accuracy": pair_acc,
            "seconds": 10.0, "extra": {"budget": 400, "eval_every": 50, "threads": 1}}


def test_commands_name_the_seeds_each_arm_was_run_with():
    runs = {(a.name, s): {} for a in study.ARMS for s in (0, 1, 2)}
    runs |= {(a, s): {} for a in ("stripes", "pyramid") for s in (3, 4)}
    head = "nice -n 15 .venv/bin/python benchmarks/study.py --scale cpu --no-sweep"
    assert study.study_commands(runs, "cpu", swept=False) == [
        f"{head} --seeds 0 1 2", f"{head} --seeds 3 4 --arms pyramid stripes"]
    partial = {(a, s): {} for a in ("global", "pyramid") for s in (0, 1)}
    assert study.study_commands(partial, "cpu-long", swept=True) == [
        "nice -n 15 .venv/bin/python benchmarks/study.py --scale cpu-long --seeds 0 1 --arms pyramid global"]


def test_report_from_result_files(tmp_path, monkeypatch):
    runs = tmp_path / "study"
    runs.mkdir()
    for seed in range(3):
        for arm, m_ap, acc, stopped in [("pyramid", 0.6 + seed / 100, None, 400),
                                        ("global", 0.5, None, 300),
                                        ("stripes", 0.7 - seed / 100, None, 300),
                                        ("target-only", 0.05, 0.5, 300)]:
            run = fake_run(arm, seed, m_ap, acc, stopped)
            if arm == "pyramid":
                run["extra"] |= {"steps": {"id/balanced": 1, "joint/balanced": 3},
                                 "median_joint_weights": {"id": 1.0, "tp": 1.0}}
            (runs / f"{arm}__s{seed}.json").write_text(json.dumps(run))
    monkeypatch.setattr(study, "RESULTS", tmp_path)
    monkeypatch.setattr(study, "RUNS", runs)
    study.write_report(argparse.Namespace(scale="cpu", seeds=[0, 1, 2]))
    report = (tmp_path / "study_cpu.md").read_text()
    # pyramid - global = +10, +11, +12 pp: mean +11, t-interval 11 -/+ 4.3027 / sqrt(3) * 1
    assert "| Pyramid beats the global baseline | 3 | +11.0 | [+8.5, +13.5] | **reproduced** |" in report
    # pyramid - stripes = -10, -8, -6: the opposite leans, but pyramid, trailing, hit its cap
    assert ("| Pyramid beats PCB-style stripes | 3 | -8.0 | [-13.0, -3.0] | undecided at this budget: "
            "at the cap the opposite holds, but the trailing arm stopped at its step cap in 3 of 3 runs |"
            ) in report
    assert "| dynamic (released) beats fixed 1:1 | 0 | | | not run yet |" in report
    assert "| target b from scratch | 3 (3 not trained) | 1 | not trained | not trained |" in report
    # pyramid, ahead, stopped at its cap; global, trailing, by early stopping: decided
    assert "3 of 12 runs reached their step cap" in report
    # the rule's choices, from the runs that recorded them
    assert "| Pyramid, dynamic as released (sum, balanced) | 3 | 25 % | 0 % | 75 % | 1 / 1 |" in report
    assert "![learning curves](study_cpu_curves.png)" in report
    assert (tmp_path / "study_cpu_curves.png").stat().st_size > 0


@pytest.mark.parametrize("scale", sorted(study.SCALES))
def test_every_arm_has_a_valid_config_at_every_scale(scale, tmp_path):
    assert study.SCALES[scale].name == scale  # it names the scale's folders
    roots = {"a": tmp_path / "a", "b": tmp_path / "b"}
    configs = {arm.name: study.config_for(arm, 0, 1.0, study.SCALES[scale], roots, tmp_path)
               for arm in study.ARMS}
    assert configs["global"].model.name == "baseline" and configs["stripes"].model.name == "stripes"
    assert configs["pyramid-paper"].dynamic.sampler == "switch"
    assert configs["cross"].mtdnet.cross_domain
    # each scale fine-tunes from its own source models
    assert configs["finetune"].mtdnet.init_checkpoint == str(
        tmp_path / "models" / scale / "mtd__s0.safetensors")
    if scale == "gpu":  # the released recipes at the papers' sizes
        pyramid, mtd = configs["pyramid"], configs["mtd"]
        assert (pyramid.data.height, pyramid.data.width, pyramid.model.backbone) == (384, 128, "resnet50")
        assert (pyramid.sampler.num_ids, pyramid.sampler.num_instances) == (8, 8)
        assert (mtd.data.height, mtd.data.width, mtd.mtdnet.triplets_per_batch) == (227, 227, 128)
        assert mtd.model.options["init"] == "caffe" and mtd.optim.bias_lr_factor == 2.0


def test_dynamic_summary_counts_the_rule_choices():
    records = [{"objective": "id", "sampler": "random", "w_id": 1.0, "w_tp": 0.0},
               {"objective": "joint", "sampler": "balanced", "w_id": 1e-4, "w_tp": 3e-5},
               {"objective": "joint", "sampler": "balanced", "w_id": 3e-4, "w_tp": 1e-5}]
    assert study.dynamic_summary(records) == {
        "steps": {"id/random": 1, "joint/balanced": 2},
        "median_joint_weights": {"id": pytest.approx(2e-4), "tp": pytest.approx(2e-5)}}
    assert study.dynamic_summary([{"loss": 1.0}]) == {}  # MTDnet steps have no rule


def test_mean_curve_only_where_every_seed_ran():
    long = [{"step": 50, "mAP": 0.2}, {"step": 100, "mAP": 0.4}, {"step": 150, "mAP": 0.9}]
    short = [{"step": 50, "mAP": 0.4}, {"step": 100, "mAP": 0.6}]
    steps, mean = study.mean_curve([long, short])
    assert steps == [50, 100] and mean == pytest.approx([0.3, 0.5])


def test_commands_for_arms_short_of_the_common_seeds():
    runs = {(a.name, s): {} for a in study.ARMS for s in (0, 1, 2) if a.name != "rnk"}
    runs[("rnk", 0)] = {}
    head = "nice -n 15 .venv/bin/python benchmarks/study.py --scale cpu --no-sweep"
    others = " ".join(a.name for a in study.ARMS if a.name != "rnk")
    assert study.study_commands(runs, "cpu", swept=False) == [
        f"{head} --seeds 0 1 2 --arms {others}", f"{head} --seeds 0 --arms rnk"]
    assert study.study_commands({}, "cpu", swept=False) == []


def test_machine_line_says_what_the_runs_recorded():
    runs = {("pyramid", 0): {"extra": {}},
            ("pyramid", 1): {"extra": {"machine": "x86_64, 16 cores, cuda", "torch": "2.9", "threads": 4}}}
    line = study.machine_line(runs, "gpu")
    assert line.startswith(
        "Runs on: not recorded (1 run); x86_64, 16 cores, cuda, torch 2.9, 4 thread(s) (1 run). Report")
    assert "niced" not in line and "niced" in study.machine_line(runs, "cpu")
