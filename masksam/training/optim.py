"""Optimiser and the poly learning-rate schedule (nnU-Net's), stepped once per iteration."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from masksam.training.config import TrainingConfig


def build_optimizer(parameters: Iterable[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum as nnU-Net, over the trainable parameters."""
    parameters = list(parameters)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def poly_factor(step: int, total_steps: int, exponent: float) -> float:
    """(1 - step / total) ** exponent, never below 0 (steps past the end keep lr at 0)."""
    return max(0.0, 1.0 - step / max(total_steps, 1)) ** exponent


class PolyLR(torch.optim.lr_scheduler.LRScheduler):
    """lr = initial lr × poly_factor(step); ``total_steps`` can be re-planned (time budgets) and is saved."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, exponent: float) -> None:
        self.total_steps = total_steps
        self.exponent = exponent
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = poly_factor(self.last_epoch, self.total_steps, self.exponent)
        return [base * factor for base in self.base_lrs]

    def set_total_steps(self, total_steps: int) -> None:
        """Re-plans the schedule's length and applies the learning rate of the current step at once."""
        self.total_steps = total_steps
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
