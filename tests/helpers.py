"""Shared test helpers: where ../shared is, and state dicts made from the official key/shape lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def official_shapes(file_name: str) -> dict[str, list[int]]:
    """Keys and shapes of an official checkpoint, from ../shared (the test is skipped if it is absent)."""
    path = SHARED / file_name
    if not path.is_file():
        pytest.skip(f"{path} is not present (the shared folder sits beside the project)")
    return json.loads(path.read_text())["keys"]


def state_dict_from_shapes(shapes: dict[str, list[int]], seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Random tensors with the given keys and shapes (integer counters for BatchNorm's batch counts)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * scale
    return state
