"""Mixed precision, for training and prediction alike: which autocast dtype a device gets, the gradient scaler
fp16 needs, and CUDA kernel settings."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from masksam.errors import ConfigError

# Compute capability from which a GPU computes bf16 natively (Ampere). Older GPUs (V100, T4) emulate it, which
# ``torch.cuda.is_bf16_supported()`` counts as support, at a fraction of fp16's speed.
NATIVE_BF16_CAPABILITY = (8, 0)
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
# `auto` on a CPU takes bf16 when a bf16 matrix product runs at least this many times faster than a float32 one
# (AMX: 7-9× measured on a 2-core Xeon; where bf16 is emulated, as on AVX2 CPUs, it is several times slower).
CPU_BF16_MIN_SPEEDUP = 2.0
PROBE_SIZE = 512


@dataclass(frozen=True)
class Precision:
    """Resolved mixed-precision setting.

    Attributes:
        dtype: Autocast dtype, or None for plain float32.
        device_type: ``cpu`` or ``cuda``.
    """

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def amp(self) -> str:
        """The explicit ``--amp`` choice that resolves to this precision again, without measuring anything."""
        return "off" if self.dtype is None else self.name

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        """Autocast context for the forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` (the run's, not the current one) computes bf16 natively (capability >= 8.0)."""
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CAPABILITY


def cpu_bf16_speedup(size: int = PROBE_SIZE, repeats: int = 3) -> float:
    """How many times faster a (size × size) bf16 matrix product runs than a float32 one on this CPU, with the
    process's current threads (best of ``repeats`` each, after a warm-up; a few milliseconds where bf16 is
    native, up to about a second where it is emulated)."""

    def best_seconds(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return max(min(times), 1e-9)

    return best_seconds(torch.float32) / best_seconds(torch.bfloat16)


def resolve_precision(amp: str, device: torch.device, *, cpu_auto_bf16: bool = True) -> Precision:
    """``auto``: bf16 on GPUs with native bf16 (compute capability >= 8.0), fp16 + GradScaler on older GPUs; on
    the CPU bf16 where a measured bf16 matrix product runs at least ``CPU_BF16_MIN_SPEEDUP`` times faster than
    float32 (AMX), else fp32 (``cpu_auto_bf16=False``: always fp32 there). Explicit choices are checked.

    Raises:
        ConfigError: An unknown value, fp16 on the CPU, or bf16 on a GPU without native bf16.
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"unknown --amp '{amp}'; choose {', '.join(AMP_CHOICES)}")
    if amp == "auto":
        if device.type != "cuda":
            if device.type == "cpu" and cpu_auto_bf16 and cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP:
                return Precision(torch.bfloat16, "cpu")
            return Precision(None, device.type)
        return Precision(torch.bfloat16 if has_native_bf16(device) else torch.float16, "cuda")
    if amp == "off":
        return Precision(None, device.type)
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp off on the CPU")
    if amp == "bf16" and device.type == "cuda" and not has_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ConfigError(
            f"this GPU (compute capability {major}.{minor}) has no native bf16 (needs 8.0 or newer); use --amp fp16"
        )
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16, device.type)


def configure_cuda_kernels(device: torch.device) -> None:
    """On a GPU: cuDNN picks the fastest convolution algorithms for our fixed patch shapes (``benchmark``), and
    float32 matrix products and convolutions use TF32 tensor cores (what ``--amp off`` computes in; autocast
    regions are unaffected). Nothing on the CPU.

    These are process-wide switches of torch; a run sets them once, for its device.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
