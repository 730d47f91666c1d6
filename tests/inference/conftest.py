"""Inference tests run torch on one thread: their tensors are tiny, and two threads on a shared 2-core machine
spend most of their time waiting for each other."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
