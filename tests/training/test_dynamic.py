"""Tests of the dynamic multi-loss scheduler against hand-computed loss sequences."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit.training.dynamic import Decision, DynamicLossScheduler, focal_weight

ID_ONLY = {"id": 1.0, "tp": 0.0}
PAPER = {"combine": "focal", "sampler": "switch"}  # the paper's rule (the defaults are the release's)

# The hand-computed sequence used below (alpha 0.25, lambda 2, delta 0.16):
#
# step 0: L_id 4.0, L_tp 1.0  -> k_id = 4.0, k_tp = 1.0 (first losses: k_{-1} = L_0, so k_0 = L_0)
#         FL undefined        -> "id", balanced (warm-up: the triplet task needs values)
# step 1: L_id 3.0, L_tp 0.9
#         k_id = 0.25*3.0 + 0.75*4.0 = 3.75    p_id = 3.75/4 = 15/16 = 0.9375
#         FL_id = (1/16)^2 * ln(16/15) = 0.00390625 * 0.0645385 = 2.52104e-4
#         k_tp = 0.25*0.9 + 0.75*1.0 = 0.975   p_tp = 0.975
#         FL_tp = 0.025^2 * ln(1/0.975) = 0.000625 * 0.0253178 = 1.58236e-5
#         FL_tp / FL_id = 0.0627664 < 0.16 -> "id", random
# step 2: L_id 2.5, L_tp 0.5
#         k_id = 0.25*2.5 + 0.75*3.75 = 3.4375   p_id = 3.4375/3.75 = 11/12
#         FL_id = (1/12)^2 * ln(12/11) = 0.00694444 * 0.0870114 = 6.04246e-4
#         k_tp = 0.25*0.5 + 0.75*0.975 = 0.85625 p_tp = 0.85625/0.975 = 0.878205
#         FL_tp = 0.121795^2 * ln(1/0.878205) = 0.0148340 * 0.129873 = 1.92657e-3
#         FL_tp / FL_id = 3.18838 >= 0.16 -> "joint", balanced
# step 3: L_id 3.6, no valid triplet
#         k_id = 0.25*3.6 + 0.75*3.4375 = 3.478125 > 3.4375 -> p_id = 1, FL_id = 0 -> "joint"
#         k_tp, p_tp and FL_tp unchanged from step 2
SEQUENCE = [(4.0, 1.0), (3.0, 0.9), (2.5, 0.5), (3.6, None)]
FL_ID_1 = (1 / 16) ** 2 * math.log(16 / 15)
FL_TP_1 = 0.025**2 * math.log(1 / 0.975)
FL_ID_2 = (1 / 12) ** 2 * math.log(12 / 11)
P_TP_2 = 0.85625 / 0.975
FL_TP_2 = (1 - P_TP_2) ** 2 * -math.log(P_TP_2)


def close(values: dict[str, float], rel: float = 1e-9) -> dict:
    return {key: pytest.approx(value, rel=rel) for key, value in values.items()}


def feed(scheduler: DynamicLossScheduler, losses) -> list[Decision]:
    return [scheduler.update(id_loss, tp_loss) for id_loss, tp_loss in losses]


def test_hand_arithmetic_matches_the_written_numbers():
    assert math.isclose(FL_ID_1, 2.52104e-4, rel_tol=1e-5)
    assert math.isclose(FL_TP_1, 1.58236e-5, rel_tol=1e-5)
    assert math.isclose(FL_ID_2, 6.04246e-4, rel_tol=1e-5)
    assert math.isclose(FL_TP_2, 1.92657e-3, rel_tol=1e-5)


def test_focal_weight_values():
    assert focal_weight(1.0, 2.0) == 0.0
    assert focal_weight(0.5, 2.0) == pytest.approx(0.25 * math.log(2))
    assert focal_weight(0.5, 0.0) == pytest.approx(math.log(2))
    assert focal_weight(0.9375, 2.0) == pytest.approx(FL_ID_1, rel=1e-12)


def test_warm_up_is_id_loss_on_balanced_batches():
    # the triplet average is fed by balanced batches only, so the warm-up must draw them
    scheduler = DynamicLossScheduler()
    assert scheduler.decision == Decision("id", "balanced", ID_ONLY, None, None)


def test_first_losses_only_initialise_the_averages():
    scheduler = DynamicLossScheduler()
    decision = scheduler.update(4.0, 1.0)
    assert decision == Decision("id", "balanced", ID_ONLY, None, None)
    state = scheduler.state_dict()
    assert state["k"] == {"id": 4.0, "tp": 1.0}
    assert state["p"] == {"id": None, "tp": None}


def test_hand_computed_sequence():
    scheduler = DynamicLossScheduler(alpha=0.25, lam=2.0, delta=0.16, **PAPER)
    d0, d1, d2, d3 = feed(scheduler, SEQUENCE)

    assert d0.objective == "id" and d0.fl is None

    assert (d1.objective, d1.sampler, d1.weights) == ("id", "random", ID_ONLY)
    assert d1.p == {"id": 0.9375, "tp": pytest.approx(0.975, rel=1e-15)}
    assert d1.fl == close({"id": FL_ID_1, "tp": FL_TP_1})

    assert (d2.objective, d2.sampler) == ("joint", "balanced")
    assert d2.p == {"id": pytest.approx(11 / 12, rel=1e-15), "tp": pytest.approx(P_TP_2, rel=1e-15)}
    assert d2.weights == close({"id": FL_ID_2, "tp": FL_TP_2})
    assert d2.weights == d2.fl

    # FL_id = 0 selects the joint objective; the triplet side keeps its step-2 values.
    assert (d3.objective, d3.sampler) == ("joint", "balanced")
    assert d3.p == {"id": 1.0, "tp": d2.p["tp"]}
    assert d3.weights == {"id": 0.0, "tp": d2.fl["tp"]}
    assert scheduler.state_dict()["k"] == {"id": 3.478125, "tp": pytest.approx(0.85625, rel=1e-15)}
    assert scheduler.decision is d3


def test_fl_is_defined_from_each_task_second_loss():
    scheduler = DynamicLossScheduler()
    # No valid triplet at all yet: FL_tp undefined however many ID losses come in.
    for decision in feed(scheduler, [(4.0, None), (3.0, None), (2.0, None)]):
        assert decision == Decision("id", "balanced", ID_ONLY, None, None)
    assert scheduler.state_dict()["k"]["tp"] is None
    # First triplet loss: initialises k_tp only.
    assert scheduler.update(1.5, 1.0).fl is None
    # Second triplet loss: both FL defined.
    # k_id: 4 -> 3.75 -> 3.3125 -> 2.859375 -> 0.25*1.4 + 0.75*2.859375 = 2.49453125
    decision = scheduler.update(1.4, 0.8)
    assert decision.p == {"id": pytest.approx(2.49453125 / 2.859375, rel=1e-15), "tp": 0.95}
    assert decision.fl == {
        "id": pytest.approx(focal_weight(2.49453125 / 2.859375, 2.0), rel=1e-12),
        "tp": pytest.approx(0.05**2 * math.log(1 / 0.95), rel=1e-9),
    }


def test_tp_none_leaves_the_triplet_average_unchanged():
    scheduler = DynamicLossScheduler()
    feed(scheduler, SEQUENCE[:3])
    before = scheduler.state_dict()
    scheduler.update(2.0, None)
    after = scheduler.state_dict()
    assert after["k"]["tp"] == before["k"]["tp"]
    assert after["p"]["tp"] == before["p"]["tp"]
    assert after["k"]["id"] == 0.25 * 2.0 + 0.75 * before["k"]["id"]


@pytest.mark.parametrize(
    ("combine", "weights"),
    [
        ("focal", {"id": 0.0, "tp": 0.0}),
        ("focal-normalized", {"id": 0.5, "tp": 0.5}),
        ("sum", {"id": 1.0, "tp": 1.0}),
    ],
)
def test_both_fl_zero_selects_joint(combine, weights):
    # Both losses rise: k_id = 0.25*5 + 0.75*4 = 4.25 > 4, k_tp = 0.25*2 + 0.75*1 = 1.25 > 1,
    # so p = 1 and FL = 0 for both; FL_id = 0 -> joint.
    scheduler = DynamicLossScheduler(combine=combine)
    decision = feed(scheduler, [(4.0, 1.0), (5.0, 2.0)])[-1]
    assert decision == Decision(
        "joint", "balanced", weights, {"id": 0.0, "tp": 0.0}, {"id": 1.0, "tp": 1.0}
    )


def test_triplet_fl_zero_with_positive_id_fl_selects_id():
    # k_id falls (FL_id > 0), k_tp rises (FL_tp = 0): ratio 0 < delta.
    decision = feed(DynamicLossScheduler(), [(4.0, 1.0), (3.0, 2.0)])[-1]
    assert decision.objective == "id"
    assert decision.fl == {"id": pytest.approx(FL_ID_1, rel=1e-12), "tp": 0.0}


@pytest.mark.parametrize(("delta", "objective"), [(0.06, "joint"), (0.07, "id")])
def test_threshold_on_the_hand_computed_ratio(delta, objective):
    # Step 1 ratio FL_tp / FL_id = 0.0627664.
    decision = feed(DynamicLossScheduler(delta=delta), SEQUENCE[:2])[-1]
    assert decision.objective == objective
    # the released mode keeps every step, ID-only ones too, on the identity-balanced batch
    assert decision.sampler == "balanced"


@pytest.mark.parametrize(("delta", "objective"), [(1.0, "joint"), (math.nextafter(1.0, 2.0), "id")])
def test_threshold_is_strict(delta, objective):
    # Identical ID and triplet sequences give FL_tp / FL_id = 1 exactly: "< delta" is strict.
    decision = feed(DynamicLossScheduler(delta=delta), [(4.0, 4.0), (3.0, 3.0)])[-1]
    assert decision.fl["id"] == decision.fl["tp"] > 0
    assert decision.objective == objective


@pytest.mark.parametrize(
    ("combine", "weights"),
    [
        ("focal", {"id": FL_ID_2, "tp": FL_TP_2}),
        ("sum", {"id": 1.0, "tp": 1.0}),
        (
            "focal-normalized",
            {"id": FL_ID_2 / (FL_ID_2 + FL_TP_2), "tp": FL_TP_2 / (FL_ID_2 + FL_TP_2)},
        ),
    ],
)
def test_combine_modes_weights(combine, weights):
    decisions = feed(DynamicLossScheduler(combine=combine), SEQUENCE[:3])
    # The decision itself does not depend on the weighting.
    assert [d.objective for d in decisions] == ["id", "id", "joint"]
    assert decisions[1].weights == ID_ONLY
    assert decisions[2].weights == {t: pytest.approx(w, rel=1e-9) for t, w in weights.items()}
    if combine == "focal-normalized":
        # Hand values: 6.04246e-4 / 2.53082e-3 = 0.238756 and 0.761244.
        assert decisions[2].weights["id"] == pytest.approx(0.238756, rel=1e-5)
        assert sum(decisions[2].weights.values()) == pytest.approx(1.0, abs=1e-15)


def test_fixed_weights_always_joint_on_balanced_batches():
    scheduler = DynamicLossScheduler(combine="fixed", fixed_weights={"id": 1.0, "tp": 0.5})
    assert scheduler.decision == Decision("joint", "balanced", {"id": 1.0, "tp": 0.5}, None, None)
    decisions = feed(scheduler, SEQUENCE)
    for d in decisions:
        assert (d.objective, d.sampler, d.weights) == ("joint", "balanced", {"id": 1.0, "tp": 0.5})
    # The FL diagnostics are still reported.
    assert decisions[1].fl == close({"id": FL_ID_1, "tp": FL_TP_1})


def test_fixed_weights_are_ignored_by_the_dynamic_modes():
    # Configs carry fixed_weights whatever the mode; only combine="fixed" uses them.
    scheduler = DynamicLossScheduler(combine="sum", fixed_weights={"id": 1.0, "tp": 0.5})
    assert scheduler.state_dict()["config"]["fixed_weights"] is None
    decisions = feed(scheduler, SEQUENCE[:3])
    assert decisions[2].weights == {"id": 1.0, "tp": 1.0}
    state = scheduler.state_dict()
    DynamicLossScheduler(combine="sum").load_state_dict(state)


def test_zero_losses_give_p_one():
    scheduler = DynamicLossScheduler()
    # k_id = 0 then 0: k_{r-1} = 0 -> p = 1.  k_tp = 1 then 0.25*0 + 0.75*1 = 0.75 -> p = 0.75.
    decision = feed(scheduler, [(0.0, 1.0), (0.0, 0.0)])[-1]
    assert decision.p == {"id": 1.0, "tp": 0.75}
    assert decision.objective == "joint"  # FL_id = 0
    # k_id = 0 then 0.25*1 = 0.25: k_{r-1} = 0 -> p = 1 as well.
    assert scheduler.update(1.0, 0.0).p["id"] == 1.0


def test_tiny_losses_keep_p_within_its_exact_bounds():
    # 0.1 * 5e-324 underflows to 0, so the raw ratio would be 0; p is clamped to 1 - alpha.
    scheduler = DynamicLossScheduler(alpha=0.9)
    decision = feed(scheduler, [(5e-324, 5e-324), (0.0, 0.0)])[-1]
    assert decision.p == {"id": pytest.approx(0.1), "tp": pytest.approx(0.1)}
    assert all(math.isfinite(w) for w in decision.fl.values())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1e-3])
@pytest.mark.parametrize("which", ["id", "tp"])
def test_invalid_losses_raise_and_leave_the_state_untouched(bad, which):
    scheduler = DynamicLossScheduler()
    feed(scheduler, SEQUENCE[:2])
    before = scheduler.state_dict()
    args = (bad, 0.5) if which == "id" else (2.0, bad)
    with pytest.raises(ValueError, match=f"{which}_loss must be a finite, non-negative"):
        scheduler.update(*args)
    assert scheduler.state_dict() == before
    # The next valid update continues exactly as if the bad one never happened.
    reference = DynamicLossScheduler()
    feed(reference, SEQUENCE[:3])
    assert scheduler.update(*SEQUENCE[2]) == reference.decision


@pytest.mark.parametrize("bad", ["1.0", [1.0], None])
def test_non_numeric_losses_raise_type_error(bad):
    with pytest.raises(TypeError, match=r"loss\.item\(\)"):
        DynamicLossScheduler().update(bad, 1.0)


def test_numpy_scalars_are_accepted():
    decisions = feed(
        DynamicLossScheduler(),
        [(np.float32(4.0), np.float64(1.0)), (np.float64(3.0), np.float32(0.9))],
    )
    assert decisions[-1].fl["id"] == pytest.approx(FL_ID_1, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"lam": -1.0}, "lam"),
        ({"delta": -0.1}, "delta"),
        ({"delta": math.inf}, "delta"),
        ({"combine": "mean"}, "combine must be one of"),
        ({"update": "step"}, "update must be one of"),
        ({"combine": "fixed"}, "needs fixed_weights"),
        ({"combine": "fixed", "fixed_weights": {"id": 1.0}}, "exactly the keys"),
        ({"combine": "fixed", "fixed_weights": {"id": 1.0, "tp": -1.0}}, "fixed_weights\\['tp'\\]"),
        ({"combine": "fixed", "fixed_weights": {"id": 0.0, "tp": 0.0}}, "at least one positive"),
    ],
)
def test_invalid_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicLossScheduler(**kwargs)


def test_epoch_mode_decides_on_epoch_means():
    scheduler = DynamicLossScheduler(update="epoch", **PAPER)
    initial = scheduler.decision
    # Epoch means: (4, 5, 3) -> 4.0 and (1.0, -, 1.0) -> 1.0; (3.5, 2.5) -> 3.0 and
    # (0.9, 0.9) -> 0.9; (2.0, 3.0) -> 2.5 and (-, 0.5) -> 0.5: the hand-computed steps 0-2 above.
    epochs = [
        [(4.0, 1.0), (5.0, None), (3.0, 1.0)],
        [(3.5, 0.9), (2.5, 0.9)],
        [(2.0, None), (3.0, 0.5)],
    ]
    closing = []
    for epoch in epochs:
        start = scheduler.decision
        assert all(d is start for d in feed(scheduler, epoch))  # constant within an epoch
        closing.append(scheduler.end_epoch())
    assert scheduler.state_dict()["epoch_count"] == {"id": 0, "tp": 0}
    assert initial.objective == "id"
    assert [d.objective for d in closing] == ["id", "id", "joint"]
    assert closing[1].fl == close({"id": FL_ID_1, "tp": FL_TP_1})
    assert closing[2].weights == close({"id": FL_ID_2, "tp": FL_TP_2})
    # An epoch without any valid triplet leaves k_tp unchanged.
    k_tp = scheduler.state_dict()["k"]["tp"]
    feed(scheduler, [(2.0, None)])
    assert scheduler.end_epoch().p["tp"] == closing[2].p["tp"]
    assert scheduler.state_dict()["k"]["tp"] == k_tp


def test_end_epoch_without_updates_raises():
    with pytest.raises(RuntimeError, match="no update"):
        DynamicLossScheduler(update="epoch").end_epoch()


def test_end_epoch_is_a_no_op_in_iteration_mode():
    scheduler = DynamicLossScheduler()
    feed(scheduler, SEQUENCE[:2])
    state = scheduler.state_dict()
    assert scheduler.end_epoch() is scheduler.decision
    assert scheduler.state_dict() == state


@pytest.mark.parametrize("update", ["iteration", "epoch"])
def test_state_round_trip_gives_identical_decisions(update):
    rng = np.random.default_rng(0)
    losses = [(float(a), float(b) if b > 0.3 else None) for a, b in rng.uniform(0, 5, (40, 2))]

    def run(scheduler, start, stop):
        out = []
        for i in range(start, stop):
            out.append(scheduler.update(*losses[i]))
            if i % 7 == 6:  # epochs of 7 iterations
                out.append(scheduler.end_epoch())
        return out

    kwargs = {"update": update, "combine": "focal-normalized", "delta": 0.5}
    expected = run(DynamicLossScheduler(**kwargs), 0, len(losses))
    assert {d.objective for d in expected} == {"id", "joint"}

    first = DynamicLossScheduler(**kwargs)
    head = run(first, 0, 17)  # stops mid-epoch: the epoch accumulators travel too
    saved = json.loads(json.dumps(first.state_dict()))
    assert saved["epoch_count"]["id"] == (3 if update == "epoch" else 0)
    resumed = DynamicLossScheduler(**kwargs)
    resumed.load_state_dict(saved)
    assert resumed.decision == first.decision
    assert head + run(resumed, 17, len(losses)) == expected


def test_load_state_rejects_other_settings_and_corrupt_states():
    source = DynamicLossScheduler(delta=0.3)
    feed(source, SEQUENCE)
    state = source.state_dict()
    with pytest.raises(ValueError, match=r"delta=0\.3 \(checkpoint\) vs 0\.16"):
        DynamicLossScheduler().load_state_dict(state)
    with pytest.raises(ValueError, match="not a DynamicLossScheduler state"):
        DynamicLossScheduler(delta=0.3).load_state_dict({"k": {}})
    corrupt = json.loads(json.dumps(state))
    corrupt["k"]["id"] = "nan"
    with pytest.raises(ValueError, match="corrupt"):
        DynamicLossScheduler(delta=0.3).load_state_dict(corrupt)
    corrupt = json.loads(json.dumps(state))
    corrupt["p"]["tp"] = 0.5  # below 1 - alpha: impossible
    with pytest.raises(ValueError, match="corrupt"):
        DynamicLossScheduler(delta=0.3).load_state_dict(corrupt)


def test_decision_is_json_ready():
    decision = feed(DynamicLossScheduler(), SEQUENCE[:3])[-1]
    assert json.loads(json.dumps(dataclasses.asdict(decision)))["objective"] == "joint"
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.objective = "id"


def realistic_losses(seed: int, steps: int = 3000) -> list[tuple[float, float]]:
    """Per-iteration losses of a Market-1501-like run: CE from ln(751) ~ 6.6 down to ~0.3 with ~8%
    batch noise, batch-hard triplet (margin 1.4) from ~1.25 down to ~0.05 with ~25% noise."""
    rng = np.random.default_rng(seed)
    r = np.arange(steps)
    id_loss = (0.3 + 6.3 * np.exp(-r / 600)) * rng.lognormal(0.0, 0.08, steps)
    tp_loss = (0.05 + 1.2 * np.exp(-r / 800)) * rng.lognormal(0.0, 0.25, steps)
    return list(zip(id_loss.tolist(), tp_loss.tolist(), strict=True))


def test_raw_focal_weights_are_tiny_on_a_realistic_sequence():
    losses = realistic_losses(seed=0)
    raw = feed(DynamicLossScheduler(combine="focal"), losses)
    normalized = feed(DynamicLossScheduler(combine="focal-normalized"), losses)
    # The weighting does not change the decisions.
    assert [d.objective for d in raw] == [d.objective for d in normalized]
    joint = [i for i, d in enumerate(raw) if d.objective == "joint"]
    assert 0.2 * len(losses) < len(joint) < 0.95 * len(losses)
    weights = np.array([[raw[i].weights["id"], raw[i].weights["tp"]] for i in joint])
    positive = weights[weights > 0]
    # Per-iteration p stays near 1: the raw weights are around 1e-3 .. 1e-6, never near 1.
    assert 1e-6 < np.median(positive) < 1e-3
    assert weights.max() < 1e-2
    sums = np.array([sum(normalized[i].weights.values()) for i in joint])
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-12)


# --- property tests ------------------------------------------------------------------------------

LOSS = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
LOSSES = st.lists(st.tuples(LOSS, st.none() | LOSS), min_size=1, max_size=25)
SETTINGS = st.fixed_dictionaries(
    {
        "alpha": st.floats(min_value=0.01, max_value=0.99),
        "lam": st.floats(min_value=0.0, max_value=4.0),
        "delta": st.floats(min_value=0.0, max_value=2.0),
        "combine": st.sampled_from(["focal", "sum", "focal-normalized"]),
    }
)


def reference_decisions(losses, alpha, lam, delta, combine):
    """The paper's rule recomputed from each task's whole loss history at every step."""
    history = {"id": [], "tp": []}
    decisions = []
    for id_loss, tp_loss in losses:
        history["id"].append(id_loss)
        if tp_loss is not None:
            history["tp"].append(tp_loss)
        fl = {}
        for task, seen in history.items():
            if len(seen) < 2:
                break
            k = [seen[0]]  # k_0 = alpha*L_0 + (1-alpha)*L_0 = L_0
            for loss in seen[1:]:
                k.append(alpha * loss + (1 - alpha) * k[-1])
            p = 1.0 if k[-2] == 0 else max(min(k[-1], k[-2]) / k[-2], 1 - alpha)
            fl[task] = 0.0 if p == 1.0 else (1 - p) ** lam * -math.log(p)
        if len(fl) < 2 or (fl["id"] > 0 and fl["tp"] / fl["id"] < delta):
            decisions.append(("id", ID_ONLY))
        elif combine == "focal":
            decisions.append(("joint", fl))
        elif combine == "sum":
            decisions.append(("joint", {"id": 1.0, "tp": 1.0}))
        else:
            total = fl["id"] + fl["tp"]
            decisions.append(("joint", {t: fl[t] / total if total else 0.5 for t in fl}))
    return decisions


@settings(max_examples=150, deadline=None)
@given(losses=LOSSES, kwargs=SETTINGS)
def test_property_matches_reference_and_weights_are_sane(losses, kwargs):
    decisions = feed(DynamicLossScheduler(**kwargs, sampler="switch"), losses)
    assert [(d.objective, d.weights) for d in decisions] == reference_decisions(losses, **kwargs)
    for d in decisions:
        assert all(math.isfinite(w) and w >= 0 for w in d.weights.values())
        warm_up = d.fl is None
        assert d.sampler == ("random" if d.objective == "id" and not warm_up else "balanced")
        if d.fl is not None:
            assert all(math.isfinite(v) and v >= 0 for v in d.fl.values())
        if d.objective == "joint" and kwargs["combine"] == "focal-normalized":
            assert sum(d.weights.values()) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(losses=LOSSES, kwargs=SETTINGS, split=st.integers(min_value=0, max_value=25))
def test_property_decisions_are_a_pure_function_of_the_losses(losses, kwargs, split):
    expected = feed(DynamicLossScheduler(**kwargs), losses)
    assert feed(DynamicLossScheduler(**kwargs), losses) == expected
    split = min(split, len(losses))
    first = DynamicLossScheduler(**kwargs)
    feed(first, losses[:split])
    resumed = DynamicLossScheduler(**kwargs)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert feed(resumed, losses[split:]) == expected[split:]
