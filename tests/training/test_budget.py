"""Fitting a schedule into a time budget, and refitting it to the epochs' measured pace."""

from __future__ import annotations

import pytest

from masksam.training.budget import Schedule, extended_epochs, fit_to_budget, shortened_epochs

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


# The ACDC run of 2026-12-02: 10 epochs × 21 steps planned from two warm-up steps, half of them with the encoder
# adapters paused; its epochs took 180-290 s and it ended with 6.4 of its 45 minutes unused.
ACDC = {"schedule": Schedule(10, 21), "max_epochs": 1000, "total_steps": 210, "pause_share": 0.5}


@pytest.mark.parametrize(
    ("epochs_done", "seconds_left", "last_epoch_seconds", "expected"),
    [
        pytest.param(9, 654.0, 248.0, 11, id="two-more-fit-where-one-was-planned"),
        pytest.param(9, 400.0, 248.0, 10, id="only-the-planned-one-fits"),
        pytest.param(9, 506.0, 248.0, 10, id="a-second-one-fits-only-without-headroom"),
        pytest.param(8, 1000.0, 262.0, 11, id="three-fit-where-two-were-planned"),
        pytest.param(5, 1800.0, 190.0, 10, id="the-last-epoch-ran-paused-so-later-ones-cost-more"),
        pytest.param(1, 2400.0, 100.0, 10, id="the-first-epoch-carries-the-warm-up"),
    ],
)
def test_a_run_takes_the_epochs_its_timed_epochs_say_fit(epochs_done, seconds_left, last_epoch_seconds, expected):
    steps_done = epochs_done * 21
    assert (
        extended_epochs(
            epochs_done=epochs_done,
            seconds_left=seconds_left,
            last_epoch_seconds=last_epoch_seconds,
            steps_done=steps_done,
            **ACDC,
        )
        == expected
    )


def test_more_epochs_never_bring_the_paused_encoder_back():
    """Stretching the schedule moves the pause's end (a share of all steps): it must stay behind the steps taken."""
    schedule = Schedule(4, 10)  # pause for the first 20 of 40 steps
    epochs = extended_epochs(
        schedule=schedule,
        epochs_done=3,
        max_epochs=1000,
        seconds_left=1e6,
        last_epoch_seconds=1.0,
        steps_done=30,
        total_steps=40,
        pause_share=0.5,
    )
    assert epochs == 6  # 60 steps: the pause would end at step 30, the steps already taken
    assert 0.5 * epochs * 10 <= 30


def test_never_more_epochs_than_asked_for():
    no_pause = {"schedule": Schedule(3, 5), "total_steps": 15, "pause_share": 0.0, "steps_done": 10}
    assert extended_epochs(epochs_done=2, max_epochs=4, seconds_left=1e6, last_epoch_seconds=1.0, **no_pause) == 4
    assert extended_epochs(epochs_done=2, max_epochs=3, seconds_left=1e6, last_epoch_seconds=1.0, **no_pause) == 3


@pytest.mark.parametrize(
    ("epochs_done", "seconds_left", "last_epoch_seconds", "expected"),
    [
        # The ACDC run of 2026-12-03 evening after its 13th epoch: 3 planned epochs left, 2 fit at 195 s.
        pytest.param(13, 400.0, 195.0, 15, id="two-of-three-planned-fit"),
        pytest.param(13, 600.0, 195.0, 16, id="all-planned-fit"),
        pytest.param(13, 5000.0, 195.0, 16, id="never-more-than-planned"),
        pytest.param(13, 150.0, 195.0, 16, id="none-fits-the-budget-stops-the-run"),
        pytest.param(1, 400.0, 195.0, 16, id="the-first-epoch-carries-the-warm-up"),
    ],
)
def test_slower_epochs_shorten_the_schedule_to_what_fits(epochs_done, seconds_left, last_epoch_seconds, expected):
    assert (
        shortened_epochs(
            schedule=Schedule(16, 48),
            epochs_done=epochs_done,
            seconds_left=seconds_left,
            last_epoch_seconds=last_epoch_seconds,
        )
        == expected
    )
