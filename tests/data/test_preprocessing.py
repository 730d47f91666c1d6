"""Preprocessing: normalisation, crop, resampling, and the exact way back to the file's grid (oblique affine)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from dataset_builders import make_dataset, oblique_affine

from masksam.data.cache import CaseCache
from masksam.data.fingerprint import fingerprint_dataset
from masksam.data.io import list_cases, read_dataset_json, read_volume
from masksam.data.plans import NormalizationPlan, plan_experiment
from masksam.data.preprocessing import (
    foreground_locations,
    normalize,
    preprocess_arrays,
    preprocess_training_case,
    preprocessed_affine,
    restore_original_geometry,
)


@pytest.mark.parametrize(
    ("plan", "check"),
    [
        (
            NormalizationPlan("ct", clip_low=-10, clip_high=10, mean=2, std=4),
            lambda out, x: np.testing.assert_allclose(out, (np.clip(x, -10, 10) - 2) / 4, rtol=1e-6),
        ),
        (
            NormalizationPlan("zscore"),
            lambda out, x: (pytest.approx(0, abs=1e-5) == out.mean(), pytest.approx(1, rel=1e-4) == out.std()),
        ),
        (NormalizationPlan("none"), lambda out, x: np.testing.assert_array_equal(out, x)),
    ],
    ids=["ct", "zscore", "none"],
)
def test_normalize(plan, check):
    x = np.random.default_rng(0).normal(3, 8, size=(1, 3, 5, 5)).astype(np.float32)
    result = check(normalize(x.copy(), (plan,)), x)
    if isinstance(result, tuple):
        assert all(result)


def test_zscore_with_nonzero_mask_keeps_outside_zero():
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, :, 1:5, 1:5] = np.random.default_rng(1).normal(50, 5, size=(2, 4, 4))
    out = normalize(x.copy(), (NormalizationPlan("zscore", use_nonzero_mask=True),))
    assert (out[x == 0] == 0).all()
    assert out[x != 0].mean() == pytest.approx(0, abs=1e-5)


def test_foreground_locations():
    label = np.zeros((2, 5, 5), np.uint8)
    label[1, 2, 3] = 2
    label[0, 0, 1] = 1
    label[0, 4, 4] = 1
    rows = foreground_locations(label, np.random.default_rng(0))
    assert rows.tolist() == [[1, 0, 0, 1], [1, 0, 4, 4], [2, 1, 2, 3]]


def _oblique_setup(tmp_path, target=None):
    root = make_dataset(tmp_path / "ds", num_cases=2, shape=(30, 26, 7), affine=oblique_affine((1.5, 1.2, 6.0)))
    description = read_dataset_json(root)
    cases = list_cases(root, description)
    plans = plan_experiment(description, fingerprint_dataset(cases, description))
    if target is not None:
        plans = dataclasses.replace(plans, target_spacing=target)
    image = read_volume(cases[0].images[0])
    label = read_volume(cases[0].label, is_label=True).array
    return plans, image, label, cases


@pytest.mark.parametrize(
    ("target", "exact"),
    [(None, True), ((6.0, 0.75, 0.6), False), ((3.0, 1.5, 1.2), False)],
    ids=["no-resampling", "upsample-in-plane", "upsample-through-plane"],
)
def test_geometry_round_trip_oblique(tmp_path, target, exact):
    plans, image, label, _ = _oblique_setup(tmp_path, target)
    pre_image, pre_label, properties = preprocess_arrays(image.array[None], label, image.geometry, plans)
    assert pre_image.shape[1:] == pre_label.shape == tuple(properties["shape_after_resampling"])
    assert plans.transpose == (2, 0, 1)
    restored, affine = restore_original_geometry(pre_label, properties, is_label=True)
    assert restored.shape == label.shape
    np.testing.assert_array_equal(affine, image.geometry.affine)
    agreement = (restored == label).mean()
    assert agreement == 1.0 if exact else agreement > 0.98
    maps = np.stack([pre_label == c for c in range(3)]).astype(np.float32)  # (K, T, H, W) like network output
    restored_maps, _ = restore_original_geometry(maps, properties, is_label=False)
    assert restored_maps.shape == (3, *label.shape)
    assert (restored_maps.argmax(0) == label).mean() > 0.97


def test_preprocessed_affine_points_at_the_same_voxels(tmp_path):
    plans, image, label, _ = _oblique_setup(tmp_path)
    _, pre_label, properties = preprocess_arrays(image.array[None], label, image.geometry, plans)
    world_from_pre = preprocessed_affine(properties)
    pre_from_file = np.linalg.inv(world_from_pre) @ image.geometry.affine
    idx = np.argwhere(label > 0)[::7]  # (n, 3) file indices of foreground voxels
    pre_idx = (pre_from_file @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    np.testing.assert_allclose(pre_idx, np.round(pre_idx), atol=1e-6)
    pre_idx = np.round(pre_idx).astype(int)
    np.testing.assert_array_equal(pre_label[tuple(pre_idx.T)], label[tuple(idx.T)])


def test_resampled_affine_keeps_grid_edges(tmp_path):
    plans, image, label, _ = _oblique_setup(tmp_path, (3.0, 0.75, 0.6))
    _, _, properties = preprocess_arrays(image.array[None], label, image.geometry, plans)
    size = np.array(properties["shape_after_resampling"])
    corners_pre = preprocessed_affine(properties) @ np.r_[size - 0.5, 1.0]  # far edge of the last voxel
    start = np.array([a for a, _ in properties["crop_box"]])
    stop = np.array([b for _, b in properties["crop_box"]])
    file_far = np.zeros(3)
    file_far[list(plans.transpose)] = stop - 0.5
    np.testing.assert_allclose(corners_pre, image.geometry.affine @ np.r_[file_far, 1.0], atol=1e-6)
    assert (start >= 0).all()


def test_preprocess_training_case_writes_and_skips(tmp_path):
    plans, _, _, cases = _oblique_setup(tmp_path)
    folder = tmp_path / "cache"
    assert preprocess_training_case((cases[0], plans, folder, 0)) == "written"
    assert preprocess_training_case((cases[0], plans, folder, 0)) == "skipped"
    cached = CaseCache(folder).read(cases[0].case_id)
    assert cached.image.dtype == np.float32 and cached.label.dtype == np.uint8
    assert cached.properties["classes_present"] == [0, 1, 2]
    other = dataclasses.replace(plans, target_spacing=(3.0, 1.5, 1.2))
    assert preprocess_training_case((cases[0], other, folder, 0)) == "written"  # plans changed
