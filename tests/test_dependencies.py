"""The torch versions pyproject.toml allows are the ones the code runs on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def torch_requirement() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return next(Requirement(text) for text in dependencies if Requirement(text).name == "torch")


def test_torch_floor_has_the_grad_scaler_fp16_training_needs() -> None:
    """torch.amp.GradScaler came with 2.3; on 2.1 and 2.2 every trainer would raise AttributeError."""
    allowed = torch_requirement().specifier
    assert not allowed.contains("2.2.2") and not allowed.contains("2.1.0")
    assert allowed.contains("2.3.0") and allowed.contains("2.13.0")
    assert hasattr(torch.amp, "GradScaler")
