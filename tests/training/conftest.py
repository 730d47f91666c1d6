"""Fixtures of the training tests: a small planned synthetic dataset and a tiny-backbone setup."""

from __future__ import annotations

from pathlib import Path

import pytest
from data.dataset_builders import planned_synthetic_dataset


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw dataset folder, plans folder) of six synthetic cases, planned and preprocessed once per session."""
    return planned_synthetic_dataset(tmp_path_factory.mktemp("training_data"))
