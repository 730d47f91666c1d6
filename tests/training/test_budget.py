"""Fitting a schedule into a time budget."""

from __future__ import annotations

import pytest

from masksam.training.budget import Schedule, fit_to_budget

CASES = [
    # budget, step s, validation s, epochs, iterations -> schedule
    pytest.param(1e6, 1.0, 5.0, 100, 250, Schedule(100, 250), id="everything-fits"),
    pytest.param(2550.0, 1.0, 5.0, 100, 250, Schedule(10, 250), id="cut-epochs"),
    pytest.param(5100.0, 1.0, 5.0, 100, 250, Schedule(20, 250), id="cut-epochs-more-than-minimum"),
    pytest.param(180.0, 1.0, 3.0, 100, 250, Schedule(10, 15), id="cut-iterations-to-keep-ten-epochs"),
    pytest.param(30.0, 1.0, 5.0, 100, 250, Schedule(1, 25), id="validation-would-dominate-fewer-longer-epochs"),
    pytest.param(225.0, 24.6, 24.6, 100, 50, Schedule(2, 3), id="slow-steps-short-budget"),
    pytest.param(1.0, 5.0, 5.0, 100, 250, Schedule(1, 1), id="nothing-fits-still-one-step"),
    pytest.param(100.0, 1.0, 0.0, 3, 250, Schedule(3, 33), id="fewer-epochs-asked-than-minimum"),
]


@pytest.mark.parametrize(("budget", "step", "validation", "epochs", "iterations", "expected"), CASES)
def test_fit_to_budget(budget, step, validation, epochs, iterations, expected):
    schedule = fit_to_budget(
        budget_seconds=budget,
        step_seconds=step,
        validation_seconds=validation,
        epochs=epochs,
        iterations_per_epoch=iterations,
    )
    assert schedule == expected
    if schedule.iterations_per_epoch > 1:  # a cut schedule fits the budget
        assert schedule.epochs * (schedule.iterations_per_epoch * step + validation) <= budget


def test_replanning_the_schedule_applies_the_new_learning_rate_at_once():
    import torch

    from masksam.training.optim import PolyLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = PolyLR(optimizer, total_steps=10_000, exponent=1.0)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    scheduler.set_total_steps(3)  # the schedule ends here
    assert optimizer.param_groups[0]["lr"] == 0.0 and scheduler.get_last_lr() == [0.0]
