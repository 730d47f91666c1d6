"""Dice and HD95: hand-computed cases, empty masks, and HD95 against brute-force pairwise distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from masksam.evaluation.metrics import binary_metrics, label_metrics, surface, volume_diagonal


def _cube(shape, start, size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _brute_force_hd95(prediction: np.ndarray, reference: np.ndarray, spacing) -> float:
    """Surfaces by looking at the 6 face neighbours, distances between every pair of surface voxels."""

    def surface_points(mask):
        padded = np.pad(mask, 1)
        core = padded[1:-1, 1:-1, 1:-1]
        interior = core.copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(core & ~interior) * np.asarray(spacing)

    points_p, points_r = surface_points(prediction), surface_points(reference)
    pairwise = np.linalg.norm(points_p[:, None, :] - points_r[None, :, :], axis=-1)
    pooled = np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])
    return float(np.percentile(pooled, 95))


# Two 4x4x4 cubes, the second shifted by 2 voxels along one axis. Dice = 2*32/(64+64) = 0.5.
# Pooled surface distances (112 values, 56 surface voxels per cube), with d = 2 voxels * spacing along the shift:
# 48 x 0, 8 x min(spacing), 24 x d/2, 32 x d -> sorted index 0.95*111 = 105.45 falls in the last group: HD95 = d.
CUBE_CASES = {
    "shift_x_fine": (0, (1.5, 1.5, 8.0), 3.0),
    "shift_z_thick": (2, (1.5, 1.5, 8.0), 16.0),
    "shift_y_anisotropic": (1, (0.7, 2.5, 1.0), 5.0),
}


@pytest.mark.parametrize(("axis", "spacing", "expected_hd95"), CUBE_CASES.values(), ids=CUBE_CASES.keys())
def test_shifted_cubes(axis, spacing, expected_hd95):
    shape = (14, 14, 14)
    start = [3, 3, 3]
    shifted = list(start)
    shifted[axis] += 2
    metrics = binary_metrics(_cube(shape, shifted), _cube(shape, start), spacing)
    assert metrics.dice == pytest.approx(0.5)
    assert metrics.hd95 == pytest.approx(expected_hd95)
    assert (metrics.true_positives, metrics.false_positives, metrics.false_negatives) == (32, 32, 32)
    assert metrics.hd95 == pytest.approx(_brute_force_hd95(_cube(shape, shifted), _cube(shape, start), spacing))


SINGLE_VOXEL_CASES = {
    # (prediction voxel, reference voxel, spacing, Dice, HD95): both directions give the same one distance.
    "same_voxel": ((2, 3, 1), (2, 3, 1), (1.0, 1.0, 1.0), 1.0, 0.0),
    "neighbour_along_z": ((2, 3, 1), (2, 3, 2), (1.5, 1.5, 8.0), 0.0, 8.0),
    "diagonal": ((0, 0, 0), (3, 4, 0), (1.0, 1.0, 5.0), 0.0, 5.0),
    "diagonal_anisotropic": ((1, 1, 1), (2, 3, 3), (2.0, 1.5, 3.0), 0.0, math.sqrt(4 + 9 + 36)),
}


@pytest.mark.parametrize(
    ("voxel_p", "voxel_r", "spacing", "dice", "hd95"), SINGLE_VOXEL_CASES.values(), ids=SINGLE_VOXEL_CASES.keys()
)
def test_single_voxels(voxel_p, voxel_r, spacing, dice, hd95):
    prediction, reference = np.zeros((5, 6, 4), bool), np.zeros((5, 6, 4), bool)
    prediction[voxel_p] = True
    reference[voxel_r] = True
    metrics = binary_metrics(prediction, reference, spacing)
    assert metrics.dice == pytest.approx(dice)
    assert metrics.hd95 == pytest.approx(hd95)


EMPTY_CASES = {
    # shape (10, 12, 4), spacing (1, 2, 3): diagonal = sqrt(10^2 + 24^2 + 12^2) = sqrt(820).
    "empty_prediction": (False, True, 0.0, math.sqrt(820.0), (0, 0, 8)),
    "empty_reference": (True, False, 0.0, math.sqrt(820.0), (0, 8, 0)),
    "both_empty": (False, False, 1.0, 0.0, (0, 0, 0)),
}


@pytest.mark.parametrize(
    ("has_prediction", "has_reference", "dice", "hd95", "counts"), EMPTY_CASES.values(), ids=EMPTY_CASES.keys()
)
def test_empty_masks(has_prediction, has_reference, dice, hd95, counts):
    shape, spacing = (10, 12, 4), (1.0, 2.0, 3.0)
    blob = _cube(shape, (2, 2, 1), size=2)
    prediction = blob if has_prediction else np.zeros(shape, bool)
    reference = blob if has_reference else np.zeros(shape, bool)
    metrics = binary_metrics(prediction, reference, spacing)
    assert (metrics.dice, metrics.hd95) == (pytest.approx(dice), pytest.approx(hd95))
    assert (metrics.true_positives, metrics.false_positives, metrics.false_negatives) == counts
    assert volume_diagonal(shape, spacing) == pytest.approx(math.sqrt(820.0))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4], ids=lambda s: f"seed{s}")
def test_hd95_matches_brute_force_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 10, 7)
    spacing = tuple(rng.uniform(0.5, 4.0, size=3))
    # Scattered voxels make many small surfaces; the full line reaches both borders of axis 1.
    prediction = rng.random(shape) < 0.15
    reference = rng.random(shape) < 0.15
    prediction[rng.integers(0, 12), :, rng.integers(0, 7)] = True
    metrics = binary_metrics(prediction, reference, spacing)
    assert metrics.hd95 == pytest.approx(_brute_force_hd95(prediction, reference, spacing), rel=1e-9)
    overlap = np.count_nonzero(prediction & reference)
    assert metrics.dice == pytest.approx(2 * overlap / (prediction.sum() + reference.sum()))


def test_percentile_differs_from_maximum():
    # One far outlier voxel among many close ones: HD95 ignores it, the maximum would not.
    shape, spacing = (40, 8, 8), (1.0, 1.0, 1.0)
    reference = _cube(shape, (2, 2, 2), size=4)
    prediction = reference.copy()
    prediction[37, 4, 4] = True
    metrics = binary_metrics(prediction, reference, spacing)
    assert metrics.hd95 == pytest.approx(_brute_force_hd95(prediction, reference, spacing))
    assert metrics.hd95 == 0.0  # 112 of the 113 pooled distances are 0; only the outlier is 32 mm away


def test_surface_of_a_cube_is_its_shell():
    cube = _cube((8, 8, 8), (2, 2, 2), size=4)
    assert surface(cube).sum() == 4**3 - 2**3
    border = np.ones((3, 3, 3), bool)
    assert surface(border).sum() == 26  # voxels on the array border are surface voxels


def test_label_metrics_per_class_matches_binary_metrics():
    rng = np.random.default_rng(7)
    shape, spacing = (30, 24, 6), (1.5, 1.5, 8.0)
    reference = np.zeros(shape, np.uint8)
    reference[3:12, 4:10, 1:5] = 1
    reference[15:25, 10:20, 0:6] = 2
    prediction = reference.copy()
    prediction[rng.random(shape) < 0.05] = 3  # class 3 only in the prediction
    prediction[14:26, 9:19, 1:5] = 2
    results = label_metrics(prediction, reference, class_ids=[1, 2, 3, 4], spacing=spacing)
    assert list(results) == [1, 2, 3, 4]
    for class_id in (1, 2, 3, 4):
        expected = binary_metrics(prediction == class_id, reference == class_id, spacing)
        assert results[class_id] == expected
    assert results[3].dice == 0.0 and results[3].hd95 == pytest.approx(volume_diagonal(shape, spacing))
    assert results[4].dice == 1.0 and results[4].hd95 == 0.0


INVALID_CASES = {
    "shape_mismatch": (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), [1], "one shape"),
    "not_3d": (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], "3D"),
    "float_labels": (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), [1], "integer"),
    "background_class": (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), [0, 1], "positive"),
}


@pytest.mark.parametrize(("prediction", "reference", "classes", "message"), INVALID_CASES.values(), ids=INVALID_CASES)
def test_label_metrics_rejects_bad_input(prediction, reference, classes, message):
    with pytest.raises(ValueError, match=message):
        label_metrics(prediction, reference, class_ids=classes, spacing=(1.0, 1.0, 1.0))
