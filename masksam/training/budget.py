"""Fitting a run into a wall-clock budget: how many epochs (and iterations per epoch) fit, from measured times."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Fewer epochs than this make the curves in progress.png and the choice of the best checkpoint meaningless.
MIN_EPOCHS_IN_BUDGET = 10
MAX_VALIDATION_SHARE = 0.25


@dataclass(frozen=True)
class Schedule:
    """Epochs × iterations this run will do; the poly schedule spans their product."""

    epochs: int
    iterations_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch


def fit_to_budget(
    *,
    budget_seconds: float,
    step_seconds: float,
    validation_seconds: float,
    epochs: int,
    iterations_per_epoch: int,
    min_epochs: int = MIN_EPOCHS_IN_BUDGET,
) -> Schedule:
    """The largest schedule, up to the requested one, that fits ``budget_seconds``.

    Epochs are cut first; iterations per epoch are cut only when even ``min_epochs`` full epochs would not
    fit, so a short budget still yields a curve with ``min_epochs`` points — unless validation would then take
    more than a quarter of the budget, in which case there are fewer, longer epochs.

    Args:
        budget_seconds: Time left for the training loop.
        step_seconds: Measured time of one optimiser step.
        validation_seconds: Estimated time of one end-of-epoch validation (and checkpoint).
        epochs: Requested epochs.
        iterations_per_epoch: Requested iterations per epoch.
        min_epochs: Epochs to keep, if the budget allows at least one step each.

    Returns:
        The schedule (at least 1 epoch of 1 iteration).
    """
    epoch_seconds = iterations_per_epoch * step_seconds + validation_seconds
    fitting_epochs = math.floor(budget_seconds / epoch_seconds) if epoch_seconds > 0 else epochs
    if fitting_epochs >= min(epochs, min_epochs):
        return Schedule(epochs=max(1, min(epochs, fitting_epochs)), iterations_per_epoch=iterations_per_epoch)
    # Validation should not eat more than a quarter of the budget: fewer, longer epochs when it would.
    affordable = epochs
    if validation_seconds > 0:
        affordable = math.floor(MAX_VALIDATION_SHARE * budget_seconds / validation_seconds)
    target_epochs = max(1, min(epochs, min_epochs, affordable))
    per_epoch = budget_seconds / target_epochs - validation_seconds
    iterations = math.floor(per_epoch / step_seconds) if step_seconds > 0 else iterations_per_epoch
    if iterations >= 1:
        return Schedule(epochs=target_epochs, iterations_per_epoch=min(iterations, iterations_per_epoch))
    # Validation alone eats the budget at min_epochs: fewer epochs of one step each.
    epochs_of_one_step = math.floor(budget_seconds / (step_seconds + validation_seconds))
    return Schedule(epochs=max(1, min(epochs, epochs_of_one_step)), iterations_per_epoch=1)
