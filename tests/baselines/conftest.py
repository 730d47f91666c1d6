"""Fixtures of the baseline tests: a small planned synthetic dataset, a tiny U-Net for it, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data.dataset_builders import make_dataset


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw dataset folder, plans folder) of six synthetic cases, planned and preprocessed once per session."""
    from masksam.data.pipeline import plan_and_preprocess

    root = tmp_path_factory.mktemp("baseline_data")
    raw = make_dataset(root / "Dataset001_Synthetic", num_cases=6)
    plans_dir = root / "plans"
    plan_and_preprocess(raw, plans_dir, preset="none", num_workers=0, num_folds=3, progress=False)
    return raw, plans_dir


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
