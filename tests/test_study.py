"""The study's statistics (benchmarks/study.py): paired t-intervals and the verdict rule."""

from __future__ import annotations

import importlib.util
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
