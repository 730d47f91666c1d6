"""Fitting a run into a wall-clock budget: how many epochs (and iterations per epoch) fit, from measured times."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Fewer epochs than this make the curves in progress.png and the choice of the best checkpoint meaningless.
MIN_EPOCHS_IN_BUDGET = 10
MAX_VALIDATION_SHARE = 0.25
# Epochs added to a running schedule must fit with this much to spare: an added epoch that the budget then cuts
# would leave the poly schedule above 0 at the end.
EXTENSION_HEADROOM = 1.05


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


def extended_epochs(
    *,
    schedule: Schedule,
    epochs_done: int,
    max_epochs: int,
    seconds_left: float,
    last_epoch_seconds: float,
    steps_done: int,
    total_steps: int,
    pause_share: float = 0.0,
) -> int:
    """Epochs a budgeted run can do now that it has timed whole epochs (at least ``schedule.epochs``).

    The schedule was fitted from the first steps' times, which carry the warm-up costs of a fresh process, so a run
    can end with minutes of its budget unused. Once an epoch other than the first has run with the costs of the
    rest of the run, its time says how many more fit, with ``EXTENSION_HEADROOM`` to spare (the rule that stops a
    run, an epoch is only started if it ends before the deadline at the last epoch's time, would otherwise cut an
    added epoch whenever one ran a little slower).

    Args:
        schedule: The fitted schedule.
        epochs_done: Epochs finished.
        max_epochs: The epochs the user asked for (never more).
        seconds_left: Time to the deadline.
        last_epoch_seconds: Time of the epoch just finished (steps and validation).
        steps_done: Optimiser steps taken; total_steps: the poly schedule's length.
        pause_share: Share of the schedule's steps with the encoder adapters paused (``encoder_adapters_from``,
            0 or 1 for no pause phase).

    Returns:
        The number of epochs for the whole run; ``schedule.epochs`` when no extension applies: during the first
        epoch, while the last epoch ran (partly) paused (the epochs after it cost more), or when no more fit. The
        pause never comes back: a longer schedule keeps its pause's end at or before the steps already taken.
    """
    if epochs_done < 2 or last_epoch_seconds <= 0:  # the first epoch's time includes the warm-up
        return schedule.epochs
    paused_phase = 0.0 < pause_share < 1.0
    if paused_phase and pause_share * total_steps > steps_done - schedule.iterations_per_epoch:
        return schedule.epochs
    epochs = min(max_epochs, epochs_done + math.floor(seconds_left / (EXTENSION_HEADROOM * last_epoch_seconds)))
    if paused_phase:
        extra_steps_allowed = math.floor(steps_done / pause_share) - total_steps
        epochs = min(epochs, schedule.epochs + extra_steps_allowed // schedule.iterations_per_epoch)
    return max(schedule.epochs, epochs)


def shortened_epochs(*, schedule: Schedule, epochs_done: int, seconds_left: float, last_epoch_seconds: float) -> int:
    """Epochs a budgeted run can still finish now that its epochs run slower than planned (at most
    ``schedule.epochs``).

    Without it the budget cuts the run at the first epoch that would end past the deadline, with the poly schedule
    still above 0 (the ACDC run of 2026-12-03 evening: cut after 15 of 16 epochs at lr 1.6e-4, its epochs 10%
    slower than the one that had added the 16th). Ending the schedule at the epochs that fit at the last epoch's
    pace lets the learning rate reach 0 on the last step instead. Unchanged during the first epoch (its time
    includes the warm-up), and when no further epoch fits: the budget then stops the run as before.
    """
    if epochs_done < 2 or last_epoch_seconds <= 0:
        return schedule.epochs
    fitting = epochs_done + math.floor(seconds_left / last_epoch_seconds)
    if fitting <= epochs_done:
        return schedule.epochs
    return min(schedule.epochs, fitting)
