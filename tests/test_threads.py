"""Thread count by measurement: the faster of one thread and every core, or what the user asked for."""

from __future__ import annotations

import torch

from masksam import threads


def test_requested_count_wins_without_measuring(monkeypatch) -> None:
    monkeypatch.setattr(threads, "measure_thread_speeds", lambda _: (_ for _ in ()).throw(AssertionError))
    choice = threads.choose_threads(3)
    assert choice.threads == 3 and "given" in choice.describe()


def test_more_threads_only_when_clearly_faster(monkeypatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "measure_thread_speeds", lambda counts: {1: 95.0, 2: 179.0})
    assert threads.choose_threads().threads == 2
    monkeypatch.setattr(threads, "measure_thread_speeds", lambda counts: {1: 95.0, 2: 100.0})
    choice = threads.choose_threads()
    assert choice.threads == 1 and "1: 95, 2: 100" in choice.describe()


def test_measurement_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    speeds = threads.measure_thread_speeds([1])
    assert speeds[1] > 0 and torch.get_num_threads() == before
