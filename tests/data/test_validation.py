"""Validation: every kind of broken dataset is reported with the case and file, and all problems at once."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dataset_builders import make_dataset, write_nifti

from masksam.data.validation import DatasetValidationError, validate_dataset
from masksam.errors import DatasetError


def _missing_channel(root: Path) -> None:
    (root / "imagesTr" / "case_001_0001.nii.gz").unlink()


def _shape_mismatch(root: Path) -> None:
    write_nifti(np.zeros((10, 10, 8), np.uint8), np.diag([1.5, 1.5, 6.0, 1.0]), root / "labelsTr" / "case_001.nii.gz")


def _affine_mismatch(root: Path) -> None:
    path = root / "labelsTr" / "case_001.nii.gz"
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[0, 3] += 5.0
    write_nifti(np.asanyarray(image.dataobj), affine, path)


def _unknown_label(root: Path) -> None:
    path = root / "labelsTr" / "case_001.nii.gz"
    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj).copy()
    array[0, 0, 0] = 7
    write_nifti(array, image.affine, path)


def _nan_intensity(root: Path) -> None:
    path = root / "imagesTr" / "case_001_0000.nii.gz"
    image = nib.load(str(path))
    array = image.get_fdata(dtype=np.float32)
    array[1, 1, 1], array[2, 2, 2] = np.nan, np.inf
    write_nifti(array, image.affine, path)


def _empty_file(root: Path) -> None:
    (root / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"")


def _unreadable_file(root: Path) -> None:
    (root / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"this is not a nifti file at all" * 20)


def _wrong_file_ending(root: Path) -> None:
    source = root / "labelsTr" / "case_001.nii.gz"
    nib.save(nib.load(str(source)), str(root / "labelsTr" / "case_001.nii"))
    source.unlink()


def _too_few_cases(root: Path) -> None:
    description = json.loads((root / "dataset.json").read_text())
    description["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(description))


def _no_channel_suffix(root: Path) -> None:
    (root / "imagesTr" / "case_001_0001.nii.gz").rename(root / "imagesTr" / "case_001_T2.nii.gz")


def _missing_label(root: Path) -> None:
    (root / "labelsTr" / "case_001.nii.gz").unlink()


@pytest.mark.parametrize(
    ("breakage", "case", "file_part", "message_part"),
    [
        pytest.param(_missing_channel, "case_001", "case_001_0001.nii.gz", "missing channel 1", id="missing-channel"),
        pytest.param(_shape_mismatch, "case_001", "case_001.nii.gz", "shape (10, 10, 8) differs", id="shape"),
        pytest.param(_affine_mismatch, "case_001", "case_001.nii.gz", "affine differs", id="affine"),
        pytest.param(_unknown_label, "case_001", "case_001.nii.gz", "label values [7]", id="label-values"),
        pytest.param(_nan_intensity, "case_001", "case_001_0000.nii.gz", "1 NaN and 1 Inf", id="nan-inf"),
        pytest.param(_empty_file, "case_001", "case_001_0000.nii.gz", "file is empty", id="empty"),
        pytest.param(_unreadable_file, "case_001", "case_001_0000.nii.gz", "unreadable NIfTI", id="unreadable"),
        pytest.param(_wrong_file_ending, "", "case_001.nii", "does not end with file_ending", id="file-ending"),
        pytest.param(_too_few_cases, "", "labelsTr", "numTraining=5", id="num-training"),
        pytest.param(_no_channel_suffix, "", "case_001_T2.nii.gz", "lacks the channel suffix", id="channel-suffix"),
        pytest.param(_missing_label, "case_001", "case_001.nii.gz", "label file missing", id="missing-label"),
    ],
)
def test_each_problem_is_reported_with_case_and_file(tmp_path, breakage, case, file_part, message_part):
    root = make_dataset(tmp_path / "ds", channels={"0": "T1", "1": "T2"})
    breakage(root)
    with pytest.raises(DatasetValidationError) as caught:
        validate_dataset(root)
    matching = [p for p in caught.value.problems if message_part in p.message]
    assert matching, [str(p) for p in caught.value.problems]
    assert matching[0].case == case
    assert matching[0].file.endswith(file_part)
    assert "\n" not in str(caught.value)  # one line for the CLI


def test_all_problems_are_reported_not_just_the_first(tmp_path):
    root = make_dataset(tmp_path / "ds", num_cases=4, channels={"0": "T1", "1": "T2"})
    _missing_channel(root)
    _nan_intensity(root)
    _too_few_cases(root)
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(DatasetValidationError) as caught:
        validate_dataset(root)
    messages = " | ".join(str(p) for p in caught.value.problems)
    for part in ("missing channel 1", "NaN", "numTraining=5", "case case_002"):
        assert part in messages
    assert len(caught.value.problems) == 4


def test_valid_dataset_passes(dataset):
    description = validate_dataset(dataset)
    assert description.num_classes == 3
    assert description.channel_names == {0: "MRI"}


@pytest.mark.parametrize(
    ("content", "message_part"),
    [
        pytest.param(None, "dataset.json not found", id="missing"),
        pytest.param("{not json", "not valid JSON", id="not-json"),
        pytest.param({"labels": {"background": 0}}, "missing key(s) channel_names", id="missing-keys"),
        pytest.param(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "a": 2},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            },
            "0..K-1",
            id="label-gap",
        ),
        pytest.param(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "a": [1, 2]},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            },
            "region-based",
            id="regions",
        ),
        pytest.param(
            {"channel_names": {"0": "CT"}, "labels": {"background": 0}, "numTraining": 1, "file_ending": "nii"},
            "file_ending must look like",
            id="file-ending",
        ),
    ],
)
def test_bad_dataset_json(tmp_path, content, message_part):
    root = tmp_path / "ds"
    root.mkdir()
    if content is not None:
        (root / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatasetError, match="dataset.json|file_ending|labels|region|0..K-1") as caught:
        validate_dataset(root)
    assert message_part in str(caught.value)
    assert str(root) in str(caught.value)


def test_missing_folders_are_problems(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "CT"}, "labels": {"background": 0}, "numTraining": 0, "file_ending": ".nii.gz"}
        )
    )
    with pytest.raises(DatasetValidationError) as caught:
        validate_dataset(root)
    assert {Path(p.file).name for p in caught.value.problems} == {"imagesTr", "labelsTr"}
