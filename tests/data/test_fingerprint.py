"""Fingerprint: non-zero box, foreground intensity statistics, pooled shapes and spacings."""

from __future__ import annotations

import numpy as np
import pytest

from masksam.data.fingerprint import IntensityStatistics, fingerprint_dataset, nonzero_bounding_box
from masksam.data.io import list_cases, read_dataset_json


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(1, 2, 3)], (slice(1, 2), slice(2, 3), slice(3, 4))),
        ([(0, 0, 0), (4, 5, 6)], (slice(0, 5), slice(0, 6), slice(0, 7))),
        ([], (slice(0, 5), slice(0, 6), slice(0, 7))),
    ],
)
def test_nonzero_bounding_box(points, expected):
    mask = np.zeros((5, 6, 7), bool)
    for p in points:
        mask[p] = True
    assert nonzero_bounding_box(mask) == expected


def test_intensity_statistics():
    stats = IntensityStatistics.of(np.arange(1001, dtype=np.float32))
    assert stats.mean == pytest.approx(500)
    assert stats.percentile_00_5 == pytest.approx(5)
    assert stats.percentile_99_5 == pytest.approx(995)
    assert (stats.min, stats.max, stats.median) == (0, 1000, 500)


def test_fingerprint_dataset(dataset):
    description = read_dataset_json(dataset)
    fingerprint = fingerprint_dataset(list_cases(dataset, description), description)
    assert fingerprint.shapes == [(40, 36, 8)] * 3
    np.testing.assert_allclose(fingerprint.spacings, [(1.5, 1.5, 6.0)] * 3)
    np.testing.assert_allclose(fingerprint.median_spacing, (1.5, 1.5, 6.0))
    # foreground blobs were raised by 50*c above N(100, 20)
    assert 150 < fingerprint.intensity_statistics[0].mean < 200
    assert fingerprint.median_nonzero_fraction < 1.0  # zero border is cropped
    assert fingerprint.to_json()["case_ids"] == ["case_000", "case_001", "case_002"]
