"""--device values: auto, cpu, cuda[:N]; unknown names and CUDA without a GPU are one-line errors."""

from __future__ import annotations

import pytest
import torch

from masksam.devices import resolve_device
from masksam.errors import ConfigError


@pytest.mark.parametrize("gpu", [False, True], ids=["no-gpu", "gpu"])
def test_auto_takes_the_gpu_when_one_is_visible(monkeypatch, gpu: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device("auto") == torch.device("cuda" if gpu else "cpu")


def test_names_and_devices_as_given(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "unknown device 'gpu'; choose cpu, cuda, cuda:N or auto"),
        ("cuda:x", "unknown device 'cuda:x'"),
        ("cuda", "device 'cuda' asked for but no CUDA GPU is visible here; use --device cpu"),
        ("cuda:0", "no CUDA GPU is visible"),
    ],
)
def test_bad_requests_are_one_line_errors(monkeypatch, name: str, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as caught:
        resolve_device(name)
    assert message in str(caught.value) and "\n" not in str(caught.value)
