"""Patch sampling: padding of small volumes, in-bounds crops, foreground oversampling."""

from __future__ import annotations

import numpy as np
import pytest

from masksam.data.preprocessing import foreground_locations
from masksam.data.sampling import choose_patch_start, crop_with_padding, sample_patch


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ((0, 0), [[0, 1], [3, 4]]),
        ((-1, -1), [[9, 9], [9, 0]]),
        ((2, 2), [[8, 9], [9, 9]]),
    ],
    ids=["inside", "before", "after"],
)
def test_crop_with_padding(start, expected):
    array = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(crop_with_padding(array, start, (2, 2), value=9), expected)


def test_crop_keeps_leading_axes_and_copies_memmap(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4))
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    patch = crop_with_padding(mapped, (1, 1, 1), (2, 2, 2))
    assert patch.shape == (2, 2, 2, 2) and not isinstance(patch, np.memmap)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((10, 50, 50), (4, 32, 32)), ((2, 20, 60), (4, 32, 32)), ((4, 32, 32), (4, 32, 32))],
    ids=["larger", "smaller-pads", "equal"],
)
def test_patch_start_bounds(shape, size):
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = choose_patch_start(shape, size, rng)
        for s, d, n in zip(start, shape, size, strict=True):
            if d >= n:
                assert 0 <= s <= d - n  # inside
            else:
                assert d - n <= s <= 0  # volume fully inside the patch


def test_small_volume_is_padded_with_background():
    """The label pads with background, the image with its darkest value (the black border the backbones saw)."""
    image = np.full((1, 2, 10, 12), 3.0, np.float32)
    image[0, 0, 0, 0] = -2.0  # the darkest voxel
    label = np.ones((2, 10, 12), np.uint8)
    patch = sample_patch(
        image, label, np.zeros((0, 4), np.int32), (4, 16, 16), np.random.default_rng(0), force_foreground=False
    )
    assert patch.image.shape == (1, 4, 16, 16) and patch.label.shape == (4, 16, 16)
    assert patch.label.sum() == 2 * 10 * 12
    padding = 4 * 16 * 16 - 2 * 10 * 12
    assert patch.image.sum() == image.sum() + padding * -2.0


def test_forced_patches_contain_foreground():
    label = np.zeros((20, 100, 100), np.uint8)
    label[15, 90, 5] = 1  # a single voxel far from the centre
    label[2, 3:5, 80:82] = 2
    image = np.zeros((1, *label.shape), np.float32)
    locations = foreground_locations(label, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(30):
        patch = sample_patch(image, label, locations, (4, 16, 16), rng, force_foreground=True)
        assert patch.label.any()
    hits = sum(
        sample_patch(image, label, locations, (4, 16, 16), rng, force_foreground=False).label.any() for _ in range(30)
    )
    assert hits < 10  # random patches rarely find it
