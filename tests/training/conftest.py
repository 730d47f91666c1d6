"""Fixtures of the training tests: a small planned synthetic dataset and a tiny-backbone setup."""

from __future__ import annotations

from pathlib import Path

import pytest
from data.dataset_builders import make_dataset


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw dataset folder, plans folder) of six synthetic cases, planned and preprocessed once per session."""
    from masksam.data.pipeline import plan_and_preprocess

    root = tmp_path_factory.mktemp("training_data")
    raw = make_dataset(root / "Dataset001_Synthetic", num_cases=6)
    plans_dir = root / "plans"
    plan_and_preprocess(raw, plans_dir, preset="none", num_workers=0, num_folds=3, progress=False)
    return raw, plans_dir
