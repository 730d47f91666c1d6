"""How many intra-op threads make this machine fastest, measured when a run starts rather than assumed.

Machines of one kind differ: on one 2-core VM two threads ran a matmul at 1.9× the speed of one, on another
two threads never helped. `measure_thread_speeds` times the same fp32 matmul with one thread and with every
core this process may use; `choose_threads` takes the fastest (fewer threads on a near tie).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

PROBE_SIZE = 768
PROBE_REPEATS = 4
PROBE_ROUNDS = 3
# More threads must be at least this much faster to be chosen (shared cores make small gains unreliable).
REQUIRED_GAIN = 1.15


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadChoice:
    """threads: the count chosen; gflops: measured GFLOP/s per candidate count (empty when not measured)."""

    threads: int
    gflops: dict[int, float]

    def describe(self) -> str:
        if not self.gflops:
            return f"{self.threads} thread(s) (given)"
        speeds = ", ".join(f"{count}: {value:.0f}" for count, value in sorted(self.gflops.items()))
        return f"{self.threads} thread(s) (measured fp32 matmul GFLOP/s by threads — {speeds})"


def measure_thread_speeds(candidates: list[int]) -> dict[int, float]:
    """GFLOP/s of a fp32 matmul with each thread count, the best of ``PROBE_ROUNDS`` rounds that alternate the
    counts (the current count is restored).

    A single short timing can catch a moment when the machine's other core is busy (on 2026-12-02 one probe
    measured 1 thread at 69 and 2 at 67 GFLOP/s on a machine that otherwise gives 45 and 82): a stall only
    lowers a round's speed, so the best round of each count is its speed.
    """
    before = torch.get_num_threads()
    a = torch.randn(PROBE_SIZE, PROBE_SIZE)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE)
    speeds: dict[int, float] = {}
    try:
        for _ in range(PROBE_ROUNDS):
            for count in candidates:
                speeds[count] = max(speeds.get(count, 0.0), matmul_gflops(count, a, b))
    finally:
        torch.set_num_threads(before)
    return speeds


def matmul_gflops(count: int, a: torch.Tensor, b: torch.Tensor) -> float:
    """GFLOP/s of ``a @ b`` (square, side PROBE_SIZE) with ``count`` threads, over PROBE_REPEATS products."""
    torch.set_num_threads(count)
    a @ b  # warm-up (thread pool start)
    started = time.perf_counter()
    for _ in range(PROBE_REPEATS):
        a @ b
    seconds = (time.perf_counter() - started) / PROBE_REPEATS
    return 2 * PROBE_SIZE**3 / seconds / 1e9


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """``requested`` if given, else the faster of one thread and every core (measured)."""
    if requested is not None:
        return ThreadChoice(threads=max(1, requested), gflops={})
    cores = available_cores()
    if cores == 1:
        return ThreadChoice(threads=1, gflops={})
    speeds = measure_thread_speeds([1, cores])
    threads = cores if speeds[cores] >= REQUIRED_GAIN * speeds[1] else 1
    return ThreadChoice(threads=threads, gflops=speeds)
