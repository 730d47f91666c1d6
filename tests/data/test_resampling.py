"""Resampling: shapes, label values kept, anisotropic slices never blended."""

from __future__ import annotations

import numpy as np
import pytest

from masksam.data.resampling import is_anisotropic, new_shape_for, resample_image, resample_label


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "expected"),
    [((10, 100, 100), (5, 1, 1), (5, 2, 2), (10, 50, 50)), ((3, 7, 7), (1, 1, 1), (2, 0.5, 0.5), (2, 14, 14))],
)
def test_new_shape_for(shape, spacing, target, expected):
    assert new_shape_for(shape, spacing, target) == expected


@pytest.mark.parametrize(("spacings", "expected"), [([(5, 1, 1)], True), ([(1, 1, 1), (2, 1, 1)], False)])
def test_is_anisotropic(spacings, expected):
    assert is_anisotropic(*spacings) is expected


@pytest.mark.parametrize("separate", [True, False])
def test_identity_when_shape_unchanged(separate):
    image = np.random.default_rng(0).normal(size=(2, 4, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(resample_image(image, (4, 9, 9), separate=separate), image)


@pytest.mark.parametrize("separate", [True, False])
def test_label_resampling_keeps_values_and_blobs(separate):
    label = np.zeros((6, 40, 40), np.uint8)
    label[:, 10:30, 10:30] = 2
    label[:, 15:25, 15:25] = 1
    out = resample_label(label, (6, 20, 20), separate=separate)
    assert out.shape == (6, 20, 20) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out == 1).sum() == pytest.approx(6 * 25, rel=0.3)


def test_anisotropic_through_plane_is_nearest():
    image = np.zeros((1, 4, 8, 8), np.float32)
    image[0, 1] = 10.0
    out = resample_image(image, (8, 8, 8), separate=True)
    assert set(np.unique(out).tolist()) == {0.0, 10.0}  # slices copied, not blended
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, 0, 10, 10, 0, 0, 0, 0])
