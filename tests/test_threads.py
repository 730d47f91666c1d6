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


def test_a_stalled_round_does_not_decide(monkeypatch) -> None:
    """Each count's speed is its best round: a round slowed by another process (2 threads at 67 once, 82 in the
    other rounds) does not make one thread look as fast."""
    rounds = iter([69.0, 67.0, 45.0, 82.0, 46.0, 81.0])  # (1 thread, 2 threads) × 3 rounds
    counts_timed = []

    def fake_gflops(count, a, b):
        counts_timed.append(count)
        return next(rounds)

    monkeypatch.setattr(threads, "matmul_gflops", fake_gflops)
    speeds = threads.measure_thread_speeds([1, 2])
    assert counts_timed == [1, 2, 1, 2, 1, 2]  # alternating, so a slow spell hits both counts
    assert speeds == {1: 69.0, 2: 82.0}
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "measure_thread_speeds", lambda counts: speeds)
    assert threads.choose_threads().threads == 2  # the first round alone (69 against 67) would have chosen 1
