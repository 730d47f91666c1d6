"""map_cases: same results in order, in-process or in worker processes."""

from __future__ import annotations

import math

import pytest

from masksam.data.parallel import map_cases


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_map_cases_in_order(workers):
    items = [1.0, 4.0, 9.0, 16.0]
    assert map_cases(math.sqrt, items, num_workers=workers, progress=False) == [1.0, 2.0, 3.0, 4.0]
