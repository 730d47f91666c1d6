"""Shared test helpers: where ../shared is, state dicts made from the official key/shape lists, and Meta's
segment-anything modelling code for parity tests."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
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


@contextlib.contextmanager
def meta_modeling() -> Iterator[types.ModuleType]:
    """Meta's ``segment_anything.modeling``, imported without its package ``__init__`` (which imports torchvision,
    which does not install beside our torch); the test is skipped when segment-anything is not installed."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("segment-anything is not installed (pip install --no-deps segment-anything)")
    saved = {name: module for name, module in sys.modules.items() if name.startswith("segment_anything")}
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["segment_anything"] = package
    try:
        yield importlib.import_module("segment_anything.modeling")
    finally:
        for name in [n for n in sys.modules if n.startswith("segment_anything")]:
            del sys.modules[name]
        sys.modules.update(saved)
