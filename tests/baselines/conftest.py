"""Fixtures of the baseline tests: a small planned synthetic dataset, a tiny U-Net for it, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data.dataset_builders import planned_synthetic_dataset


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw dataset folder, plans folder) of six synthetic cases, planned and preprocessed once per session."""
    return planned_synthetic_dataset(tmp_path_factory.mktemp("baseline_data"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
