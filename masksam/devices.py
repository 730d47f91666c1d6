"""Choosing the torch device from a ``--device`` value (cpu, cuda, cuda:N or auto)."""

from __future__ import annotations

import torch

from masksam.errors import ConfigError


def resolve_device(requested: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when a GPU is visible, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given.

    Raises:
        ConfigError: An unknown device name, or CUDA asked for on a machine without a visible GPU.
    """
    name = str(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"unknown device '{name}'; choose cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but no CUDA GPU is visible here; use --device cpu")
    return torch.device(name)
