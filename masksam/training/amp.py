"""Mixed precision: which autocast dtype a device gets, and the gradient scaler fp16 needs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from masksam.errors import ConfigError


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
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        """Autocast context for the forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU; explicit choices are checked."""
    if amp == "auto":
        if device.type != "cuda":
            return Precision(None, device.type)
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, "cuda")
    if amp == "off":
        return Precision(None, device.type)
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp off on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16 support; use --amp fp16")
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16, device.type)
