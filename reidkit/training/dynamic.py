"""The dynamic multi-loss scheduler of Pyramid (Zheng et al., CVPR 2019).

Before each training step the scheduler says which objective to optimise and which sampler feeds
the batch; after the step it takes the step's ID (softmax) and triplet loss values and decides the
next step. It works on plain floats and holds no tensors or modules.

For each task ``t`` in ``{"id", "tp"}`` and update ``r`` (an iteration, or an epoch with
``update="epoch"``)::

    k_r = alpha * L_r + (1 - alpha) * k_{r-1}      with k_{-1} = L_0
    p_r = min(k_r, k_{r-1}) / k_{r-1}
    FL(p, lam) = -(1 - p)^lam * log(p)

If ``FL_tp / FL_id < delta`` the next step optimises the ID loss alone; otherwise it optimises
``w_id * L_id + w_tp * L_tp``. ``sampler`` says which batches feed the steps:

- ``"switch"`` (the paper): ID-only steps draw a random batch, joint steps an identity-balanced
  (P x K) batch;
- ``"balanced"`` (the released code, PersonReID-Pyramid 63ffd64 ``src/train.py`` and YouReID
  ``models/pyramid.py``): every step draws the balanced batch; the rule only picks the loss.

The joint weights are set by ``combine``:

- ``"focal"`` (the paper): ``w_t = FL_t``;
- ``"sum"`` (the authors' released code): ``w_t = 1``;
- ``"focal-normalized"``: ``w_t = FL_t / (FL_id + FL_tp)``, and 0.5 each when both FL are 0;
- ``"fixed"``: the given ``fixed_weights``, always the joint objective on balanced batches (the
  ablation baseline without any dynamic decision).

Conventions where the paper is silent:

- **First loss.** A task's first loss only initialises its average: ``k_{-1} = L_0`` gives
  ``k_0 = L_0`` and ``p_0 = 1`` whatever the loss, so ``FL_0 = 0`` carries no information and is
  not used. A task's FL is defined from the update that brings its *second* loss on (``p_1``).
  Until both tasks have an FL the objective is ID alone on balanced batches (except with
  ``combine="fixed"``), and ``Decision.fl`` and ``Decision.p`` are None.
- **No valid triplet.** ``tp_loss=None`` leaves the triplet task untouched: its ``k`` and ``p``
  (hence ``FL_tp``) keep their values and the update does not count as one of its losses.
- **Triplet values from balanced batches only.** A random batch of 64 on Market-1501 has about 5
  anchors with a positive, so its batch-hard triplet value is a different, lower and noisier
  quantity; feeding it to the average would make the decisions follow the sampler instead of
  learning progress. The trainer therefore passes ``tp_loss=None`` for steps on random batches
  (only ``"switch"`` has them). With ``"switch"`` the warm-up steps (before both tasks have an FL)
  are ID-only steps on *balanced* batches, so that the triplet task gets its first two values.
- **Zero values.** ``FL_id == 0`` (the ID average did not fall) selects the joint objective, as
  the paper says, without dividing by zero; with ``combine="focal"`` that joint step gives the ID
  loss weight 0 (and the triplet loss too when ``FL_tp`` is 0). A zero average ``k_{r-1} = 0``
  gives ``p = 1``.
- **Rounding.** Since losses are non-negative, ``k_r >= (1 - alpha) * k_{r-1}``, so ``p`` is
  clamped to ``[1 - alpha, 1]`` to absorb float rounding (tiny or subnormal losses); FL is then
  always finite.
- **Bad losses.** A negative, NaN or infinite loss raises ValueError before any state changes, so a
  diverged step cannot poison the averages.
- **Per-epoch updates.** With ``update="epoch"`` the trainer still calls :meth:`update` every
  iteration; the scheduler only accumulates the losses (the triplet mean is over the iterations
  that had a valid triplet) and returns the unchanged decision. :meth:`end_epoch` applies the
  epoch's mean losses as one update and returns the decision for the whole next epoch. With
  ``update="iteration"``, :meth:`end_epoch` does nothing, so the trainer can call it regardless.
- **Distributed training.** Every rank must decide the same, so the trainer all-reduces (averages)
  the loss values across ranks before calling :meth:`update`; the scheduler itself is
  rank-agnostic.

Magnitude: updated per iteration, ``p`` stays near 1 and the raw focal weights come out around
1e-3 to 1e-6 on a realistic loss sequence, which scales the joint objective's gradient down by as
much; ``"focal-normalized"`` keeps the paper's relative weighting at unit scale.

The decision history is not kept here: the trainer logs every :class:`Decision`
(``dataclasses.asdict`` gives a JSON-ready dict).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Objective = Literal["id", "joint"]
Sampler = Literal["random", "balanced"]
SamplerMode = Literal["balanced", "switch"]
Combine = Literal["focal", "sum", "focal-normalized", "fixed"]
UpdateMode = Literal["iteration", "epoch"]

TASKS = ("id", "tp")
COMBINE_MODES: tuple[str, ...] = get_args(Combine)
UPDATE_MODES: tuple[str, ...] = get_args(UpdateMode)
SAMPLER_MODES: tuple[str, ...] = get_args(SamplerMode)
_STATE_VERSION = 1


def focal_weight(p: float, lam: float) -> float:
    """``FL(p, lam) = -(1 - p)^lam * log(p)`` for ``p`` in (0, 1]; exactly 0 at ``p = 1``."""
    if p == 1.0:
        return 0.0
    return (1.0 - p) ** lam * -math.log(p)


@dataclass(frozen=True)
class Decision:
    """What the next training step optimises and how its batch is sampled.

    ``weights`` are the coefficients of ``{"id": L_id, "tp": L_tp}`` in the objective (1 and 0 for
    the ID objective). ``fl`` and ``p`` are the per-task diagnostics behind the decision, None until
    both tasks have seen two losses.
    """

    objective: Objective
    sampler: Sampler
    weights: dict[str, float]
    fl: dict[str, float] | None = None
    p: dict[str, float] | None = None


def _check_loss(name: str, value: Any) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}; "
            "pass a Python float (e.g. loss.item())"
        )
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"{name} must be a finite, non-negative loss value, got {value!r}; a NaN or infinite "
            "loss means training diverged (lower the learning rate or check the inputs)"
        )
    return value


def _check_param(name: str, value: Any, low: float, high: float, low_open: bool) -> float:
    ok = isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value < high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)


def _check_fixed_weights(weights: Any) -> dict[str, float]:
    if not isinstance(weights, Mapping) or set(weights) != set(TASKS):
        raise ValueError(
            'fixed_weights must be a mapping with exactly the keys "id" and "tp", '
            f'e.g. {{"id": 1.0, "tp": 1.0}}; got {weights!r}'
        )
    checked = {
        t: _check_param(f"fixed_weights[{t!r}]", weights[t], 0.0, math.inf, False) for t in TASKS
    }
    if not any(checked.values()):
        raise ValueError("fixed_weights must have at least one positive weight, got both 0")
    return checked


class DynamicLossScheduler:
    """Chooses, step by step, between the ID objective and the weighted joint ID + triplet one.

    Args:
        alpha: smoothing factor of the loss averages, in (0, 1).
        lam: focusing exponent ``lambda`` of FL, >= 0.
        delta: threshold on ``FL_tp / FL_id`` below which the ID objective alone is used, >= 0.
        combine: joint weights, one of ``"focal"`` (the paper), ``"sum"`` (the released code),
            ``"focal-normalized"``, ``"fixed"``.
        update: ``"iteration"`` (the paper) or ``"epoch"`` (decide once per epoch on mean losses).
        fixed_weights: ``{"id": w, "tp": w}``, required with ``combine="fixed"``, ignored otherwise
            (a config may carry them whatever the mode).
        sampler: ``"switch"`` (the paper: random batches for ID-only steps) or ``"balanced"``
            (the released code: balanced batches for every step).

    The defaults are the released code's rule, as ``DynamicConfig``'s are; the paper's is
    ``combine="focal", sampler="switch"``.

    Use: read :attr:`decision` before a step, call :meth:`update` after it (and :meth:`end_epoch`
    at the end of each epoch). See the module docstring for the exact conventions.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        lam: float = 2.0,
        delta: float = 0.16,
        combine: Combine = "sum",
        update: UpdateMode = "iteration",
        fixed_weights: Mapping[str, float] | None = None,
        sampler: SamplerMode = "balanced",
    ) -> None:
        self.alpha = _check_param("alpha", alpha, 0.0, 1.0, True)
        self.lam = _check_param("lam", lam, 0.0, math.inf, False)
        self.delta = _check_param("delta", delta, 0.0, math.inf, False)
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_MODES)}; got {combine!r}")
        if update not in UPDATE_MODES:
            raise ValueError(f"update must be one of {', '.join(UPDATE_MODES)}; got {update!r}")
        if sampler not in SAMPLER_MODES:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLER_MODES)}; got {sampler!r}")
        if combine == "fixed" and fixed_weights is None:
            raise ValueError('combine="fixed" needs fixed_weights, e.g. {"id": 1.0, "tp": 1.0}')
        self.combine: Combine = combine
        self.update_mode: UpdateMode = update
        self.sampler_mode: SamplerMode = sampler
        self.fixed_weights = _check_fixed_weights(fixed_weights) if combine == "fixed" else None
        # k: latest average (None before the first loss); p: latest ratio (None before the second).
        self._k: dict[str, float | None] = dict.fromkeys(TASKS)
        self._p: dict[str, float | None] = dict.fromkeys(TASKS)
        # Per-epoch accumulators (update="epoch" only).
        self._epoch_sum = dict.fromkeys(TASKS, 0.0)
        self._epoch_count = dict.fromkeys(TASKS, 0)
        self._decision = self._decide()

    @property
    def decision(self) -> Decision:
        """The decision for the next training step."""
        return self._decision

    def update(self, id_loss: float, tp_loss: float | None) -> Decision:
        """Record one step's loss values and return the decision for the next step.

        ``tp_loss`` is None when the batch had no valid triplet. With ``update="epoch"`` the
        values are only accumulated and the decision does not change until :meth:`end_epoch`.
        """
        id_value = _check_loss("id_loss", id_loss)
        tp_value = None if tp_loss is None else _check_loss("tp_loss", tp_loss)
        if self.update_mode == "epoch":
            self._accumulate("id", id_value)
            if tp_value is not None:
                self._accumulate("tp", tp_value)
            return self._decision
        self._apply(id_value, tp_value)
        return self._decision

    def end_epoch(self) -> Decision:
        """Close an epoch: with ``update="epoch"``, update on the epoch's mean losses.

        Returns the decision for the next epoch. A no-op with ``update="iteration"``.
        """
        if self.update_mode == "iteration":
            return self._decision
        if self._epoch_count["id"] == 0:
            raise RuntimeError("end_epoch() called with no update() since the last epoch ended")
        means = {
            t: self._epoch_sum[t] / self._epoch_count[t] if self._epoch_count[t] else None
            for t in TASKS
        }
        self._epoch_sum = dict.fromkeys(TASKS, 0.0)
        self._epoch_count = dict.fromkeys(TASKS, 0)
        self._apply(means["id"], means["tp"])
        return self._decision

    def state_dict(self) -> dict[str, Any]:
        """The settings and averages as a plain JSON-serialisable dict."""
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "k": dict(self._k),
            "p": dict(self._p),
            "epoch_sum": dict(self._epoch_sum),
            "epoch_count": dict(self._epoch_count),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved by a scheduler built with the same settings."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"not a DynamicLossScheduler state (version {_STATE_VERSION}); "
                "pass the dict saved from DynamicLossScheduler.state_dict()"
            )
        saved = state.get("config")
        config = self._config()
        if saved != config:
            saved = saved if isinstance(saved, Mapping) else {}
            diff = ", ".join(
                f"{key}={saved.get(key)!r} (checkpoint) vs {value!r}"
                for key, value in config.items()
                if saved.get(key) != value
            )
            raise ValueError(
                f"scheduler settings differ from the checkpoint's: {diff}; "
                "build the scheduler with the checkpoint's settings to resume"
            )
        try:
            k = {t: self._restore(state["k"][t], 0.0, math.inf) for t in TASKS}
            p = {t: self._restore(state["p"][t], 1.0 - self.alpha, 1.0) for t in TASKS}
            epoch_sum = {t: self._restore(state["epoch_sum"][t], 0.0, math.inf) for t in TASKS}
            epoch_count = {t: int(state["epoch_count"][t]) for t in TASKS}
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"corrupt DynamicLossScheduler state: {error}") from error
        consistent = all(
            (k[t] is not None or p[t] is None) and epoch_sum[t] is not None and epoch_count[t] >= 0
            for t in TASKS
        )
        if not consistent:
            raise ValueError(f"corrupt DynamicLossScheduler state: {dict(state)!r}")
        self._k, self._p = k, p
        self._epoch_sum, self._epoch_count = epoch_sum, epoch_count
        self._decision = self._decide()

    def _config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "lam": self.lam,
            "delta": self.delta,
            "combine": self.combine,
            "update": self.update_mode,
            "sampler": self.sampler_mode,
            "fixed_weights": None if self.fixed_weights is None else dict(self.fixed_weights),
        }

    @staticmethod
    def _restore(value: Any, low: float, high: float) -> float | None:
        if value is None:
            return None
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"value {value!r} outside [{low}, {high}]")
        return value

    def _accumulate(self, task: str, value: float) -> None:
        self._epoch_sum[task] += value
        self._epoch_count[task] += 1

    def _apply(self, id_value: float, tp_value: float | None) -> None:
        self._step_task("id", id_value)
        if tp_value is not None:
            self._step_task("tp", tp_value)
        self._decision = self._decide()

    def _step_task(self, task: str, loss: float) -> None:
        k_prev = self._k[task]
        if k_prev is None:  # first loss: k_{-1} = L_0, so k_0 = L_0 and p_0 = 1 is not used
            self._k[task] = loss
            return
        k = self.alpha * loss + (1.0 - self.alpha) * k_prev
        p = 1.0 if k_prev == 0.0 else min(k, k_prev) / k_prev
        self._k[task] = k
        self._p[task] = max(p, 1.0 - self.alpha)

    def _decide(self) -> Decision:
        fl = p = None
        if self._p["id"] is not None and self._p["tp"] is not None:
            p = {t: self._p[t] for t in TASKS}
            fl = {t: focal_weight(p[t], self.lam) for t in TASKS}
        if self.fixed_weights is not None:
            return Decision("joint", "balanced", dict(self.fixed_weights), fl, p)
        if fl is None or (fl["id"] > 0.0 and fl["tp"] / fl["id"] < self.delta):
            # switch mode's warm-up stays on balanced batches: the triplet task needs values
            random = self.sampler_mode == "switch" and fl is not None
            return Decision("id", "random" if random else "balanced", {"id": 1.0, "tp": 0.0}, fl, p)
        if self.combine == "focal":
            weights = dict(fl)
        elif self.combine == "sum":
            weights = {"id": 1.0, "tp": 1.0}
        else:
            total = fl["id"] + fl["tp"]
            weights = {t: fl[t] / total if total > 0.0 else 0.5 for t in TASKS}
        return Decision("joint", "balanced", weights, fl, p)
