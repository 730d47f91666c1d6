"""Fixtures of the data tests; the builders live in dataset_builders.py (importable from the tests here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset_builders import copy_acdc_cases, make_dataset  # noqa: E402


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A valid 3-case synthetic dataset (spacing 1.5 x 1.5 x 6 mm)."""
    return make_dataset(tmp_path / "Dataset001_Synthetic")


@pytest.fixture
def acdc_small(tmp_path: Path) -> Path:
    """Three real ACDC cases (two frames of one patient), cropped to 96x96 in-plane."""
    return copy_acdc_cases(
        tmp_path / "Dataset027_ACDC", ["patient001_frame01", "patient001_frame02", "patient002_frame01"]
    )
