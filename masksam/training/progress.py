"""Logs a person can read: a text log, ``metrics.csv`` (one row per epoch) and ``progress.png``.

Every file is rewritten atomically from the full history, so a resumed run continues the same curves and a
killed run never leaves half a row or half a picture.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from masksam.files import create_temporary_file


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary_file(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class TextLog:
    """Appends time-stamped lines to ``training_log.txt`` (and echoes them through ``echo``)."""

    def __init__(self, path: Path, echo=print) -> None:
        self.path = Path(path)
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {message}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(stamped + "\n")
        if self.echo is not None:
            self.echo(message)


def write_metrics_csv(history: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per epoch; columns are the union of the keys in first-seen order."""
    columns: list[str] = []
    for record in history:
        columns.extend(key for key in record if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for record in history:
        writer.writerow({key: _format(value) for key, value in record.items()})
    _write_bytes_atomic(buffer.getvalue().encode(), Path(path))


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _lone_marker(x: Sequence[int]) -> str | None:
    """A marker for a series of one epoch (a line through one point draws nothing), none for longer ones."""
    return "o" if len(x) == 1 else None


# Pseudo-Dice axis: a little beyond 0..1, so a class stuck at 0 (or perfect at 1) is drawn above the frame.
DICE_LIMITS = (-0.04, 1.04)


def draw_progress(history: Sequence[dict[str, Any]], path: Path, *, class_names: Sequence[str], title: str) -> None:
    """Draws :func:`progress_figure` into ``path`` (PNG, written atomically)."""
    figure = progress_figure(history, class_names=class_names, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    _write_bytes_atomic(buffer.getvalue(), Path(path))


def progress_figure(history: Sequence[dict[str, Any]], *, class_names: Sequence[str], title: str):
    """Losses, pseudo-Dice per class (with its moving average), learning rate and epoch time against the epoch.

    Four panels sharing the epoch axis, whose ticks are whole epochs. The learning rate and the epoch time each
    have their own panel (on one panel's twin axes their lines crossed and hid each other).

    Expected keys per record: ``epoch``, ``train_loss``, ``val_loss``, ``loss_<term>``, ``dice_<class>``,
    ``mean_dice``, ``mean_dice_ema``, ``lr``, ``epoch_seconds`` (missing keys are skipped).

    Returns:
        A matplotlib Figure (Agg canvas, no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 12), layout="constrained")
    FigureCanvasAgg(figure)
    losses, dice, rate, timing = figure.subplots(4, 1, sharex=True, height_ratios=(3, 3, 1.2, 1.2))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        x, y = _series(history, key)
        if x:
            losses.plot(x, y, style, color="black", linewidth=2, marker=_lone_marker(x), label=key.replace("_", " "))
    term_keys = sorted({k for r in history for k in r if k.startswith("loss_")})
    for key in term_keys:
        x, y = _series(history, key)
        if x:
            losses.plot(x, y, linewidth=1, alpha=0.8, marker=_lone_marker(x), label=key.removeprefix("loss_"))
    losses.set_ylabel("loss (weighted terms)")
    losses.set_title(title)
    if losses.get_lines():
        losses.legend(fontsize=8, ncol=3)
    losses.grid(alpha=0.3)

    for name in class_names:
        x, y = _series(history, f"dice_{name}")
        if x:
            dice.plot(x, y, linewidth=1, marker=".", label=name, clip_on=False)
    for key, style in (("mean_dice", "k-"), ("mean_dice_ema", "k--")):
        x, y = _series(history, key)
        if x:
            dice.plot(x, y, style, linewidth=2, marker=_lone_marker(x), label=key.replace("_", " "))
    dice.set_ylabel("pseudo-Dice (validation patches)")
    dice.set_ylim(*DICE_LIMITS)
    if dice.get_lines():  # no validation patches: an empty panel, without an empty legend's warning
        dice.legend(fontsize=8, ncol=3)
    dice.grid(alpha=0.3)

    for panel, key, label, colour in (
        (rate, "lr", "learning rate", "tab:blue"),
        (timing, "epoch_seconds", "epoch time (s)", "tab:orange"),
    ):
        x, y = _series(history, key)
        if x:
            panel.plot(x, y, color=colour, marker=".")
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
    rate.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    timing.set_xlabel("epoch")
    timing.xaxis.set_major_locator(MaxNLocator(integer=True))  # shared: every panel ticks whole epochs
    epochs = [r["epoch"] for r in history if isinstance(r.get("epoch"), (int, float))]
    if epochs and min(epochs) == max(epochs):  # one epoch: a window around it, not a sliver
        timing.set_xlim(min(epochs) - 1, max(epochs) + 1)
    return figure
