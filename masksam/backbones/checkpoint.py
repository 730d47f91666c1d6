"""Reading official SAM / MedSAM / LiteMedSAM weight files and loading them strictly.

Official files are plain `state_dict`s saved with `torch.save`; some re-distributions wrap them in a dict
under "model" or "state_dict". Loading is strict: every key and every shape must match, and a mismatch is
reported in one line naming the file, the expected backbone, and the first offending keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from masksam.errors import CheckpointError

_WRAPPER_KEYS = ("model", "state_dict")
_KEYS_SHOWN = 3


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file onto the CPU and unwrap it to a flat {name: tensor} mapping.

    Raises:
        CheckpointError: the file is missing, unreadable/truncated, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such weights file; check the path (`masksam weights --help` says where to get one)"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt zips and pickles
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch weights file ({reason}); it may be truncated, download it again"
        ) from error
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"{path}: holds no state_dict of tensors; pass an official SAM/MedSAM/LiteMedSAM .pth file"
        )
    return dict(loaded)


def describe_mismatch(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Return a short description of missing/unexpected/mis-shaped keys, or None when they match exactly."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state_dict and state_dict[key].shape != tensor.shape
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if keys:
            more = f" (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:_KEYS_SHOWN])}{more}")
    return "; ".join(parts) or None


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, backbone: str) -> None:
    """Copy `state_dict` into `module`, requiring every key and shape to match.

    Raises:
        CheckpointError: naming `source`, the expected `backbone` and the first offending keys.
    """
    problem = describe_mismatch(module, state_dict)
    if problem:
        raise CheckpointError(
            f"{source}: not a '{backbone}' checkpoint ({problem}); pass the file made for this backbone or choose "
            f"the backbone that matches the file"
        )
    module.load_state_dict(state_dict, strict=True)
