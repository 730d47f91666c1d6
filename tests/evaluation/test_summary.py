"""Folder evaluation: file matching, geometry checks, class discovery, means and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from masksam.errors import DatasetError
from masksam.evaluation.metrics import binary_metrics, volume_diagonal
from masksam.evaluation.summary import evaluate_folders, match_cases, read_label_names, write_summary

SHAPE = (16, 14, 6)
SPACING = (1.5, 1.5, 8.0)
AFFINE = np.diag([*SPACING, 1.0])
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}


def _write(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _reference(case: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 3:7, 1:5] = 1
    label[8:12, 5:9, 1:4] = 2
    if case == 1:
        label[8:12, 5:9, 1:4] = 0  # class 2 absent from the reference of case_b
    return label


def _dataset_json(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    description = {"channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder / "dataset.json"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two cases. case_a: class 1 exact, class 2 shifted by 2 voxels along x. case_b: class 1 exact,
    class 2 predicted but absent from the reference. Class 3 is absent everywhere."""
    predictions, references = tmp_path / "pred", tmp_path / "gt"
    for case, name in enumerate(("case_a", "case_b")):
        reference = _reference(case)
        prediction = _reference(0)
        prediction[prediction == 2] = 0
        prediction[10:14, 5:9, 1:4] = 2
        _write(reference, references / f"{name}.nii.gz")
        _write(prediction, predictions / f"{name}.nii.gz")
    (predictions / "summary.json").write_text("{}")
    np.savez(predictions / "case_a.npz", probabilities=np.zeros(3))
    _write(np.zeros(SHAPE, np.uint8), predictions / "case_extra.nii.gz")
    return predictions, references


def test_summary_content(folders, tmp_path):
    predictions, references = folders
    summary = evaluate_folders(predictions, references, labels=_dataset_json(tmp_path / "ds"), num_workers=0)
    shifted = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    shifted[0][10:14, 5:9, 1:4], shifted[1][8:12, 5:9, 1:4] = True, True
    class2_case_a = binary_metrics(*shifted, SPACING)
    assert class2_case_a.dice == pytest.approx(0.5)  # 2 of 4 x-columns overlap
    diagonal = volume_diagonal(SHAPE, SPACING)

    assert [c.case_id for c in summary.cases] == ["case_a", "case_b"]
    assert [(c.class_id, c.name) for c in summary.classes] == [(1, "RV"), (2, "MYO"), (3, "LV")]
    by_class = {c.class_id: c for c in summary.classes}
    assert (by_class[1].dice, by_class[1].hd95, by_class[1].num_present) == (1.0, 0.0, 2)
    assert by_class[2].dice == pytest.approx((0.5 + 0.0) / 2)
    assert by_class[2].hd95 == pytest.approx((class2_case_a.hd95 + diagonal) / 2)
    assert by_class[2].num_present == 1
    assert (by_class[3].dice, by_class[3].hd95, by_class[3].num_cases, by_class[3].num_present) == (1.0, 0.0, 2, 0)
    assert summary.foreground_dice == pytest.approx((1.0 + 0.25 + 1.0) / 3)
    assert summary.foreground_hd95 == pytest.approx(by_class[2].hd95 / 3)
    assert summary.ignored_files == ["case_a.npz", "case_extra.nii.gz", "summary.json"]

    path = write_summary(summary, predictions / "summary.json")
    written = json.loads(path.read_text())
    assert set(written) >= {"definitions", "mean", "foreground_mean", "metric_per_case", "labels"}
    assert "diagonal" in written["definitions"]["empty_masks"] and "pooled" in written["definitions"]["HD95"]
    assert written["labels"] == {"1": "RV", "2": "MYO", "3": "LV"}
    case_b = written["metric_per_case"][1]
    assert case_b["case"] == "case_b" and case_b["spacing"] == list(SPACING)
    assert case_b["metrics"]["2"] == {
        "Dice": 0.0,
        "HD95": diagonal,
        "TP": 0,
        "FP": 48,
        "FN": 0,
        "n_pred": 48,
        "n_ref": 0,
    }
    assert written["mean"]["2"]["Dice"] == pytest.approx(0.25)
    assert written["foreground_mean"]["Dice"] == pytest.approx(summary.foreground_dice)
    assert sorted(p.name for p in predictions.iterdir()) == [
        "case_a.nii.gz",
        "case_a.npz",
        "case_b.nii.gz",
        "case_extra.nii.gz",
        "summary.json",
    ]  # no temporary file left behind


def test_classes_from_references_without_labels(folders):
    predictions, references = folders
    summary = evaluate_folders(predictions, references, num_workers=0)
    assert [(c.class_id, c.name) for c in summary.classes] == [(1, "1"), (2, "2")]


@pytest.mark.slow
def test_process_pool_matches_in_process(folders):
    # Slow: two spawned workers import numpy, scipy, nibabel and torch (masksam.data) before they start.
    predictions, references = folders
    in_process = evaluate_folders(predictions, references, num_workers=0)
    pooled = evaluate_folders(predictions, references, num_workers=2)
    assert pooled.cases == in_process.cases and pooled.classes == in_process.classes


def _missing_prediction(predictions: Path, references: Path) -> None:
    (predictions / "case_b.nii.gz").unlink()


def _shape_mismatch(predictions: Path, references: Path) -> None:
    _write(np.zeros((16, 14, 5), np.uint8), predictions / "case_b.nii.gz")


def _affine_mismatch(predictions: Path, references: Path) -> None:
    affine = AFFINE.copy()
    affine[0, 3] = 0.01
    _write(_reference(0), predictions / "case_b.nii.gz", affine)


def _unknown_label(predictions: Path, references: Path) -> None:
    label = _reference(0)
    label[0, 0, 0] = 5
    _write(label, predictions / "case_b.nii.gz")


def _fractional_label(predictions: Path, references: Path) -> None:
    _write(_reference(0).astype(np.float32) * 0.5, predictions / "case_b.nii.gz")


FOLDER_ERRORS = {
    "missing_prediction": (_missing_prediction, True, ["no prediction for 1 of 2", "case_b"]),
    "shape_mismatch": (_shape_mismatch, True, ["case_b", "pred/case_b.nii.gz", "gt/case_b.nii.gz", "shape"]),
    "affine_mismatch": (_affine_mismatch, True, ["case_b", "pred/case_b.nii.gz", "gt/case_b.nii.gz", "affine"]),
    "unknown_label_with_dataset_json": (_unknown_label, True, ["case_b", "[5]", "not in dataset.json"]),
    "unknown_label_without_dataset_json": (_unknown_label, False, ["case_b", "[5]", "--labels"]),
    "fractional_label": (_fractional_label, True, ["pred/case_b.nii.gz", "not all integers"]),
}


@pytest.mark.parametrize(("damage", "with_labels", "expected"), FOLDER_ERRORS.values(), ids=FOLDER_ERRORS.keys())
def test_folder_errors_are_one_line(folders, tmp_path, damage, with_labels, expected):
    predictions, references = folders
    damage(predictions, references)
    labels = _dataset_json(tmp_path / "ds") if with_labels else None
    with pytest.raises(DatasetError) as error:
        evaluate_folders(predictions, references, labels=labels, num_workers=0)
    message = str(error.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_affine_within_tolerance_is_accepted(folders):
    predictions, references = folders
    affine = AFFINE.copy()
    affine[0, 3] = 5e-4
    _write(_reference(1), predictions / "case_b.nii.gz", affine)
    summary = evaluate_folders(predictions, references, num_workers=0)
    assert summary.cases[1].metrics[1].dice == 1.0


def test_float_stored_integer_labels_are_accepted(folders):
    predictions, references = folders
    _write(_reference(1).astype(np.float32), predictions / "case_b.nii.gz")
    summary = evaluate_folders(predictions, references, num_workers=0)
    assert summary.cases[1].metrics[1].dice == 1.0


def test_prediction_with_nii_ending_is_matched(folders):
    predictions, references = folders
    (predictions / "case_b.nii.gz").unlink()
    _write(_reference(1), predictions / "case_b.nii")
    pairs, _, _ = match_cases(predictions, references)
    assert [p.name for _, p, _ in pairs] == ["case_a.nii.gz", "case_b.nii"]


@pytest.mark.parametrize("form", ["file", "folder"])
def test_label_names_from_file_or_folder(tmp_path, form):
    path = _dataset_json(tmp_path / "ds")
    assert read_label_names(path if form == "file" else path.parent) == {1: "RV", 2: "MYO", 3: "LV"}


def test_label_file_with_other_name_is_rejected(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text("{}")
    with pytest.raises(DatasetError, match="dataset.json file or a folder"):
        read_label_names(path)


def test_empty_reference_folder(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(DatasetError, match="no .nii.gz/.nii label maps"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_workers=0)
