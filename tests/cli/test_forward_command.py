"""`masksam forward`'s timing: on CUDA the clock is read only after the GPU has finished (synchronised)."""

from __future__ import annotations

import pytest
import torch

from masksam.cli import forward_command
from masksam.cli.forward_command import timed_forward


class Recorder(torch.nn.Module):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        self.events.append("forward")
        return volume * 2


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        pytest.param("cuda", ["synchronize", "clock", "forward", "synchronize", "clock"], id="cuda-synchronised"),
        pytest.param("cuda:1", ["synchronize", "clock", "forward", "synchronize", "clock"], id="cuda-n"),
        pytest.param("cpu", ["clock", "forward", "clock"], id="cpu-no-synchronize"),
    ],
)
def test_the_clock_waits_for_the_gpu(monkeypatch, device, expected):
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("synchronize"))
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(forward_command.time, "perf_counter", lambda: events.append("clock") or next(clock))
    output, seconds = timed_forward(Recorder(events), torch.ones(2), torch.device(device))
    assert events == expected
    assert seconds == 2.5 and output.tolist() == [2.0, 2.0]
