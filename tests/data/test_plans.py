"""Planning: axis choice, target spacing, normalisation, patch/queries, and the plans.json round trip."""

from __future__ import annotations

import numpy as np
import pytest

from masksam.data.fingerprint import DatasetFingerprint, IntensityStatistics
from masksam.data.io import DatasetDescription
from masksam.data.plans import Plans, choose_target_spacing, choose_transpose, plan_experiment
from masksam.data.presets import get_data_preset
from masksam.errors import ConfigError


@pytest.mark.parametrize(
    ("spacing", "shape", "expected"),
    [
        ((1.5, 1.5, 6.0), (200, 200, 10), (2, 0, 1)),
        ((5.0, 0.8, 0.8), (30, 512, 512), (0, 1, 2)),
        ((1.0, 1.0, 1.0), (216, 256, 9), (2, 0, 1)),  # ACDC: spacing unknown, fewest voxels wins
        ((0.8, 3.0, 0.8), (300, 40, 300), (1, 0, 2)),
    ],
    ids=["z-thick", "x-thick", "isotropic-tie", "y-thick"],
)
def test_choose_transpose(spacing, shape, expected):
    assert choose_transpose(np.array(spacing), np.array(shape)) == expected


@pytest.mark.parametrize(
    ("spacings", "shapes", "through", "expected", "anisotropic"),
    [
        ([[1, 1, 1], [1, 1, 1]], [[100, 100, 100]] * 2, 2, [1, 1, 1], False),
        ([[0.7, 0.7, 5], [0.8, 0.8, 5]], [[512, 512, 100]] * 2, 2, [0.75, 0.75, 5], True),
        # few thick slices: through-plane target becomes the 10th percentile
        ([[1, 1, 10]] * 9 + [[1, 1, 5]], [[256, 256, 10]] * 10, 2, [1, 1, 9.5], True),
    ],
    ids=["isotropic", "anisotropic-many-slices", "anisotropic-few-slices"],
)
def test_choose_target_spacing(spacings, shapes, through, expected, anisotropic):
    target, aniso = choose_target_spacing(np.array(spacings, float), np.array(shapes, float), through)
    np.testing.assert_allclose(target, expected)
    assert aniso is anisotropic


def _fingerprint(spacing=(1.5, 1.5, 6.0), shape=(200, 180, 10), channels=1) -> DatasetFingerprint:
    stats = IntensityStatistics(
        mean=50.0, std=10.0, median=48.0, percentile_00_5=-100.0, percentile_99_5=300.0, min=-1000.0, max=2000.0
    )
    return DatasetFingerprint(["a", "b"], [shape, shape], [spacing, spacing], 0.9, [stats] * channels)


def _description(channels=None, classes=4) -> DatasetDescription:
    labels = {"background": 0, **{f"c{i}": i for i in range(1, classes)}}
    return DatasetDescription("Dataset001_X", channels or {0: "CT"}, labels, 2, ".nii.gz")


def test_ct_and_mri_normalisation():
    plans = plan_experiment(_description({0: "CT", 1: "T2"}), _fingerprint(channels=2))
    ct, mri = plans.normalization
    assert (ct.scheme, ct.clip_low, ct.clip_high, ct.mean, ct.std) == ("ct", -100.0, 300.0, 50.0, 10.0)
    assert mri.scheme == "zscore"


def test_preset_fixes_patch_and_queries():
    plans = plan_experiment(_description(), _fingerprint(), preset=get_data_preset("amos"))
    assert (plans.patch_size, plans.num_queries, plans.preset) == ((9, 512, 512), 24, "amos")


def test_default_patch_from_data():
    plans = plan_experiment(_description(classes=12), _fingerprint(shape=(100, 90, 6)))
    assert plans.transpose == (2, 0, 1)
    assert plans.target_spacing == (6.0, 1.5, 1.5)
    assert plans.median_shape == (6, 100, 90)
    assert plans.patch_size == (6, 128, 128)
    assert plans.num_queries == 16  # 12 classes rounded up to a multiple of 8


def test_too_few_queries_for_classes():
    with pytest.raises(ConfigError, match="queries"):
        plan_experiment(_description(classes=10), _fingerprint(), preset=get_data_preset("acdc"))


def test_plans_json_round_trip(tmp_path):
    plans = plan_experiment(_description({0: "CT", 1: "T2"}), _fingerprint(channels=2), preset=get_data_preset("acdc"))
    plans.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path) == plans
    assert Plans.from_json(plans.to_json()) == plans


@pytest.mark.parametrize(
    ("mutation", "message"),
    [({"plans_version": 99}, "plans_version"), ({"patch_size": None}, "malformed")],
)
def test_bad_plans(mutation, message):
    data = plan_experiment(_description(), _fingerprint()).to_json() | mutation
    with pytest.raises(ConfigError, match=message):
        Plans.from_json(data)


def test_missing_plans_file(tmp_path):
    with pytest.raises(ConfigError, match="masksam plan"):
        Plans.load(tmp_path / "plans.json")
