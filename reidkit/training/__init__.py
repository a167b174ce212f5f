"""Training: the dynamic scheduler, the two trainers, resumable streams, multi-split protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reidkit.config import Config, IDTripletConfig, MTDNetConfig

if TYPE_CHECKING:
    from rich.console import Console

    from reidkit.training.base import TrainerBase


def build_trainer(cfg: Config, *, resume: bool = False, console: Console | None = None) -> TrainerBase:
    """The trainer of the recipe's family (its ``model.name``'s), built from it; ``.fit()`` runs it."""
    if isinstance(cfg, MTDNetConfig):
        from reidkit.training.mtdnet_trainer import MTDNetTrainer

        return MTDNetTrainer(cfg, resume=resume, console=console)
    if isinstance(cfg, IDTripletConfig):
        from reidkit.training.trainer import Trainer

        return Trainer(cfg, resume=resume, console=console)
    raise TypeError(f"build_trainer needs a recipe from reidkit.config.load_config, got "
                    f"{type(cfg).__name__}")
