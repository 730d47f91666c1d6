"""A fake clock for the trainer: time moves only by the work it times, so budget tests depend on no machine."""

from __future__ import annotations

from types import SimpleNamespace

from masksam.training import trainer as trainer_module
from masksam.training.trainer import Trainer


class FakeClock:
    """The trainer's clock, moved by the work it times: each training step costs ``step_seconds`` (a function of
    the step's index over all this clock has seen), each validation ``validation_seconds``. Fitting a schedule to a
    budget then depends on no machine's speed or load."""

    def __init__(self, step_seconds=lambda index: 1.0, validation_seconds: float = 0.5, start: float = 1000.0):
        self.now, self.start = start, start
        self.step_seconds, self.validation_seconds = step_seconds, validation_seconds
        self.steps = 0

    def __call__(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start


def on_fake_clock(trainer: Trainer, clock: FakeClock, monkeypatch) -> Trainer:
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(trainer_module, "draw_progress", lambda *args, **kwargs: None)  # 1-2 s an epoch, not timed
    train_step, validate = trainer.train_step, trainer.validate

    def timed_step(*args, **kwargs):
        clock.now += clock.step_seconds(clock.steps)
        clock.steps += 1
        return train_step(*args, **kwargs)

    def timed_validation(*args, **kwargs):
        clock.now += clock.validation_seconds
        return validate(*args, **kwargs)

    trainer.train_step, trainer.validate = timed_step, timed_validation
    return trainer
