"""Where datasets and caches live: nnU-Net IDs under $nnUNet_raw, and the plans folder plan and train share."""

from __future__ import annotations

from pathlib import Path

import pytest

from masksam.data.locations import default_plans_dir, resolve_dataset, training_plans_dir
from masksam.errors import DatasetError


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """An nnUNet_raw folder with Dataset027_ACDC and Dataset004_Hippocampus (empty folders are enough here)."""
    for name in ("Dataset027_ACDC", "Dataset004_Hippocampus"):
        (tmp_path / "raw" / name).mkdir(parents=True)
    return tmp_path / "raw"


@pytest.mark.parametrize("text", ["27", "027", "Dataset027", "Dataset027_ACDC"])
def test_an_id_finds_its_folder_under_nnunet_raw(raw: Path, text: str) -> None:
    assert resolve_dataset(text, {"nnUNet_raw": str(raw)}) == raw / "Dataset027_ACDC"


def test_a_folder_is_taken_as_it_is(raw: Path) -> None:
    folder = raw / "Dataset004_Hippocampus"
    assert resolve_dataset(folder, {}) == folder


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        pytest.param("27", {}, "27: no such folder, and nnUNet_raw is not set", id="variable_unset"),
        pytest.param("27", {"nnUNet_raw": "/nowhere/raw"}, "/nowhere/raw: nnUNet_raw names no folder", id="no_root"),
        pytest.param("5", "raw", "no Dataset005_* folder for dataset 5", id="no_match"),
        pytest.param("Dataset005_Prostate", "raw", "no Dataset005_Prostate folder", id="no_such_name"),
        pytest.param("runs/acdc_data", "raw", "runs/acdc_data: dataset folder not found", id="neither"),
    ],
)
def test_what_names_no_dataset_is_one_line(raw: Path, text: str, environ, message: str) -> None:
    environ = {"nnUNet_raw": str(raw)} if environ == "raw" else environ
    with pytest.raises(DatasetError) as caught:
        resolve_dataset(text, environ)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_several_matching_folders_are_refused(raw: Path) -> None:
    (raw / "Dataset027_ACDC_copy").mkdir()
    with pytest.raises(DatasetError) as caught:
        resolve_dataset("27", {"nnUNet_raw": str(raw)})
    assert str(caught.value) == (
        f"{raw}: several folders match dataset 27 (Dataset027_ACDC, Dataset027_ACDC_copy); give the folder itself"
    )


def test_plan_and_train_share_one_folder_per_dataset(tmp_path: Path) -> None:
    dataset = tmp_path / "raw" / "Dataset027_ACDC"
    shared = tmp_path / "preprocessed"
    assert default_plans_dir(dataset, {"MASKSAM_PREPROCESSED": str(shared)}) == shared / "Dataset027_ACDC"
    assert default_plans_dir(dataset, {}) == Path("masksam_preprocessed") / "Dataset027_ACDC"
    environ = {"MASKSAM_PREPROCESSED": str(shared)}
    assert training_plans_dir(dataset, tmp_path / "runs" / "a", None, environ) == shared / "Dataset027_ACDC"
    assert training_plans_dir(dataset, tmp_path / "runs" / "a", tmp_path / "mine", environ) == tmp_path / "mine"


def test_a_model_folder_planned_by_an_older_masksam_keeps_its_plans(tmp_path: Path) -> None:
    output = tmp_path / "runs" / "old"
    (output / "plans").mkdir(parents=True)
    (output / "plans" / "plans.json").write_text("{}")
    assert training_plans_dir(tmp_path / "Dataset027_ACDC", output, None, {}) == output / "plans"
