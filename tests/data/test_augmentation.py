"""Augmentation: image and label aligned to the voxel, shapes, label integrity, region size for rotations,
determinism from the generator."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from alignment import assert_label_follows_image, coordinate_image

from masksam.data.augmentation import (
    AugmentationConfig,
    SpatialParams,
    apply_intensity,
    apply_spatial,
    augment,
    draw_spatial,
    input_size_for,
)

ALWAYS = AugmentationConfig(
    rotation_probability=1,
    scale_probability=1,
    noise_probability=1,
    blur_probability=1,
    brightness_probability=1,
    contrast_probability=1,
    low_resolution_probability=1,
    gamma_probability=1,
    gamma_inverted_probability=1,
)
NEVER = AugmentationConfig(
    rotation_probability=0,
    scale_probability=0,
    noise_probability=0,
    blur_probability=0,
    brightness_probability=0,
    contrast_probability=0,
    low_resolution_probability=0,
    gamma_probability=0,
    gamma_inverted_probability=0,
    mirror_axes=(),
)


def _sample(size=(3, 60, 70)):
    gen = torch.Generator().manual_seed(0)
    image = torch.randn((2, *size), generator=gen)
    label = torch.randint(0, 4, size, generator=gen)
    return image, label


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (None, (3, 32, 40)),
        (SpatialParams(0.0, 1.0), (3, 34, 42)),
        (SpatialParams(math.pi / 2, 1.0), (3, 42, 40)),
        (SpatialParams(math.pi / 4, 1.4), (3, 74, 74)),
    ],
)
def test_input_size_for(params, expected):
    assert input_size_for((3, 32, 40), params) == expected


def test_no_augmentation_is_a_center_crop():
    image, label = _sample()
    out_image, out_label = augment(image, label, (3, 32, 40), None, NEVER, np.random.default_rng(0))
    torch.testing.assert_close(out_image, image[:, :, 14:46, 15:55])
    torch.testing.assert_close(out_label, label[:, 14:46, 15:55])


def test_identity_spatial_transform():
    image, label = _sample((3, 34, 42))
    out_image, out_label = apply_spatial(image, label, (32, 40), SpatialParams(0.0, 1.0))
    torch.testing.assert_close(out_image, image[:, :, 1:33, 1:41])
    torch.testing.assert_close(out_label, label[:, 1:33, 1:41])


def test_quarter_turn_rotates_every_slice_alike():
    image, label = _sample((3, 32, 32))
    _, out_label = apply_spatial(image, label, (32, 32), SpatialParams(math.pi / 2, 1.0))
    rotated = torch.rot90(label, k=1, dims=(1, 2))
    assert (out_label == rotated).float().mean() > 0.99 or (out_label == rotated.flip(1).flip(2)).float().mean() > 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_augmentation_shapes_and_labels(seed):
    rng = np.random.default_rng(seed)
    params = draw_spatial(ALWAYS, rng)
    size = input_size_for((3, 32, 40), params)
    image, label = _sample(size)
    out_image, out_label = augment(image, label, (3, 32, 40), params, ALWAYS, rng)
    assert out_image.shape == (2, 3, 32, 40) and out_image.dtype == torch.float32
    assert out_label.shape == (3, 32, 40) and out_label.dtype == torch.long
    assert set(out_label.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.isfinite(out_image).all()


def test_same_generator_state_same_result():
    image, label = _sample()
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        params = draw_spatial(ALWAYS, rng)
        runs.append(augment(image, label, (3, 32, 40), params, ALWAYS, rng))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1])


def test_intensity_keeps_input_untouched():
    image, _ = _sample()
    before = image.clone()
    apply_intensity(image, ALWAYS, np.random.default_rng(0))
    torch.testing.assert_close(image, before)


# ------------------------------------------------------------------------------------------- alignment

SPATIAL_ONLY = AugmentationConfig(
    rotation_probability=1,
    scale_probability=1,
    noise_probability=0,
    blur_probability=0,
    brightness_probability=0,
    contrast_probability=0,
    low_resolution_probability=0,
    gamma_probability=0,
    gamma_inverted_probability=0,
)


@pytest.mark.parametrize("seed", range(8))
def test_rotated_scaled_and_mirrored_image_and_label_stay_aligned_to_the_voxel(seed):
    rng = np.random.default_rng(seed)
    params = draw_spatial(SPATIAL_ONLY, rng)
    assert params is not None and params.angle != 0 and params.scale != 1
    size = input_size_for((3, 32, 40), params)
    image = coordinate_image(size)
    label = torch.randint(0, 5, size, generator=torch.Generator().manual_seed(seed))  # every voxel its own class
    out_image, out_label = augment(image, label, (3, 32, 40), params, SPATIAL_ONLY, rng)
    torch.testing.assert_close(out_image[3], torch.ones(3, 32, 40))  # the region was large enough: no border
    assert_label_follows_image(out_image, out_label, label)


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 1, 2)], ids=["T", "H", "W", "all"])
def test_mirroring_moves_image_and_label_together(axes):
    config = dataclasses.replace(NEVER, mirror_axes=axes)
    image, label = coordinate_image((3, 32, 40)), torch.randint(0, 5, (3, 32, 40))
    flipped = set()
    for seed in range(16):
        out_image, out_label = augment(image, label, (3, 32, 40), None, config, np.random.default_rng(seed))
        assert_label_follows_image(out_image, out_label, label)
        # A flipped axis shows in the image: its coordinate runs backwards along it.
        flipped |= {axis for axis in axes if (out_image[axis].diff(dim=axis) < 0).all()}
    assert flipped == set(axes)  # every allowed flip was exercised
