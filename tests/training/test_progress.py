"""progress.png: whole-epoch ticks, learning rate and epoch time on panels of their own, Dice 0 and 1 visible."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from masksam.training.progress import draw_progress, progress_figure

CLASSES = ["RV", "MYO", "LV"]


def history(epochs: int) -> list[dict[str, float]]:
    """Records as the trainer writes them; RV stays at Dice 0 (a class the model never finds)."""
    return [
        {
            "epoch": epoch,
            "train_loss": 2.0 / epoch,
            "val_loss": 2.2 / epoch,
            "loss_mask": 1.0 / epoch,
            "dice_RV": 0.0,
            "dice_MYO": min(1.0, 0.1 * epoch),
            "dice_LV": 1.0,
            "mean_dice": 0.5,
            "mean_dice_ema": 0.4,
            "lr": 1e-4 * (1 - epoch / (epochs + 1)),
            "epoch_seconds": 30.0 + epoch,
        }
        for epoch in range(1, epochs + 1)
    ]


def drawn(epochs: int):
    figure = progress_figure(history(epochs), class_names=CLASSES, title="test")
    figure.draw_without_rendering()  # autoscaling and layout as in the saved picture
    return figure


def panel(figure, ylabel: str):
    (found,) = [axes for axes in figure.axes if axes.get_ylabel() == ylabel]
    return found


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 40])
def test_epoch_ticks_are_whole_numbers(epochs):
    figure = drawn(epochs)
    for axes in figure.axes:
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks, f"no epoch tick on {axes.get_ylabel()!r}"
        np.testing.assert_array_equal(ticks, np.round(ticks))


def test_learning_rate_and_epoch_time_have_panels_of_their_own():
    figure = drawn(5)
    rate, timing = panel(figure, "learning rate"), panel(figure, "epoch time (s)")
    assert not rate.get_position().overlaps(timing.get_position())
    np.testing.assert_allclose(rate.get_lines()[0].get_ydata(), [r["lr"] for r in history(5)])
    np.testing.assert_allclose(timing.get_lines()[0].get_ydata(), [r["epoch_seconds"] for r in history(5)])
    assert len(rate.get_lines()) == 1 and len(timing.get_lines()) == 1


def test_dice_axis_shows_zero_and_one_inside_the_frame():
    low, high = panel(drawn(5), "pseudo-Dice (validation patches)").get_ylim()
    assert low < 0 and high > 1
    assert low > -0.1 and high < 1.1  # a margin, not a different scale


def test_draw_progress_writes_a_png(tmp_path):
    path = tmp_path / "progress.png"
    draw_progress(history(3), path, class_names=CLASSES, title="test")
    assert imread(str(path)).ndim == 3
    assert [p.name for p in tmp_path.iterdir()] == ["progress.png"]


def test_empty_history_draws_empty_panels(tmp_path):
    draw_progress([], tmp_path / "progress.png", class_names=CLASSES, title="no epoch yet")
    assert (tmp_path / "progress.png").is_file()


def test_a_single_epoch_is_drawn_as_points():
    figure = drawn(1)
    lines = [line for axes in figure.axes for line in axes.get_lines()]
    assert lines and all(line.get_marker() not in (None, "None", "") for line in lines)
