"""Training: the dynamic scheduler, the two trainers, resumable streams, multi-split protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reidkit.config import Config, ConfigError
from reidkit.models import TRAINED_BY

if TYPE_CHECKING:
    from rich.console import Console

    from reidkit.training.base import TrainerBase


def build_trainer(cfg: Config, *, resume: bool = False, console: Console | None = None) -> TrainerBase:
    """The trainer of ``cfg.model.name``'s family, built from the recipe (``.fit()`` runs it)."""
    kind = TRAINED_BY.get(cfg.model.name)
    if kind is None:
        raise ConfigError(f"model.name={cfg.model.name!r} is not a trainable model; "
                          f"choose one of {', '.join(sorted(TRAINED_BY))}")
    if kind == "mtdnet":
        from reidkit.training.mtdnet_trainer import MTDNetTrainer

        return MTDNetTrainer(cfg, resume=resume, console=console)
    from reidkit.training.trainer import Trainer

    return Trainer(cfg, resume=resume, console=console)
