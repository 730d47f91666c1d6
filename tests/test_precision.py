"""Mixed precision: the choice of bf16, fp16 + GradScaler or fp32 from the run's device (a GPU's compute capability,
mocked here), checks of explicit choices, and the CUDA kernel switches."""

from __future__ import annotations

import math

import pytest
import torch

from masksam.errors import ConfigError
from masksam.precision import configure_cuda_kernels, resolve_precision

# Compute capabilities of GPUs users train on.
V100, T4, A100, H100 = (7, 0), (7, 5), (8, 0), (9, 0)


@pytest.fixture
def gpus(monkeypatch):
    """Mocked GPUs: set ``capabilities[index]``; every capability query is recorded with the device it asked about.
    ``torch.cuda.is_bf16_supported`` answers True, as it does on a V100 or T4 (it counts emulated bf16)."""
    capabilities: dict[int, tuple[int, int]] = {}
    asked: list[torch.device] = []

    def capability(device=None):
        device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        asked.append(device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return capabilities[index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    return capabilities, asked


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        pytest.param(V100, "fp16", id="V100-emulated-bf16"),
        pytest.param(T4, "fp16", id="T4-emulated-bf16"),
        pytest.param(A100, "bf16", id="A100"),
        pytest.param(H100, "bf16", id="H100"),
    ],
)
def test_auto_takes_bf16_from_compute_capability_8(gpus, capability, expected) -> None:
    capabilities, _ = gpus
    capabilities[0] = capability
    precision = resolve_precision("auto", torch.device("cuda", 0))
    assert precision.name == expected and precision.device_type == "cuda"
    assert precision.needs_scaler is (expected == "fp16")  # fp16 trains with a GradScaler


def test_auto_asks_the_runs_gpu_not_the_current_one(gpus) -> None:
    """A torchrun rank on cuda:1 of a machine whose cuda:0 (the current device) is older."""
    capabilities, asked = gpus
    capabilities[0], capabilities[1] = V100, A100
    assert resolve_precision("auto", torch.device("cuda", 1)).name == "bf16"
    assert asked and all(device == torch.device("cuda", 1) for device in asked)
    capabilities[0], capabilities[1] = A100, T4
    assert resolve_precision("auto", torch.device("cuda", 1)).name == "fp16"


def test_explicit_choices_are_checked(gpus) -> None:
    capabilities, _ = gpus
    capabilities[0] = T4
    with pytest.raises(ConfigError, match=r"compute capability 7\.5\) has no native bf16.*use --amp fp16"):
        resolve_precision("bf16", torch.device("cuda", 0))
    assert resolve_precision("fp16", torch.device("cuda", 0)).name == "fp16"
    assert resolve_precision("off", torch.device("cuda", 0)).name == "fp32"
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown --amp 'half'; choose auto, bf16, fp16, off"):
        resolve_precision("half", torch.device("cpu"))


def test_cpu_is_fp32_unless_bf16_is_asked_for() -> None:
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")).name == "bf16"
    assert not resolve_precision("auto", torch.device("cpu")).scaler().is_enabled()


@pytest.mark.parametrize(("speedup", "expected"), [(1.9, "fp32"), (2.0, "bf16"), (8.0, "bf16"), (0.1, "fp32")])
def test_auto_takes_bf16_on_a_cpu_where_it_was_measured_fast(monkeypatch, speedup: float, expected: str) -> None:
    monkeypatch.setattr("masksam.precision.cpu_bf16_speedup", lambda *args, **kwargs: speedup)
    assert resolve_precision("auto", torch.device("cpu")).name == expected
    assert resolve_precision("auto", torch.device("cpu"), cpu_auto_bf16=False).name == "fp32"
    assert resolve_precision("off", torch.device("cpu")).name == "fp32"
    chosen = resolve_precision("auto", torch.device("cpu"))
    assert resolve_precision(chosen.amp, torch.device("cpu")) == chosen  # what a run's own predictor is given


def test_the_cpu_probe_measures_a_positive_ratio() -> None:
    from masksam.precision import cpu_bf16_speedup

    ratio = cpu_bf16_speedup(size=64, repeats=1)
    assert math.isfinite(ratio) and ratio > 0


@pytest.fixture
def kernel_switches():
    """Puts torch's process-wide switches back after the test."""
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_a_gpu_run_benchmarks_convolutions_and_computes_float32_in_tf32(kernel_switches) -> None:
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    configure_cuda_kernels(torch.device("cpu"))
    assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "highest"
    configure_cuda_kernels(torch.device("cuda", 0))  # only flags: no GPU is touched
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high"
