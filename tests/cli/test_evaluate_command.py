"""`masksam evaluate` through typer: the table, the summary path, options, and errors as MaskSamError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from masksam.cli import evaluate_command
from masksam.errors import DatasetError


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("evaluate")(evaluate_command.evaluate)

    @app.callback()
    def _root() -> None:  # a callback keeps "evaluate" a sub-command, as in masksam's app
        pass

    return app


def _write(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0])), str(path))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    reference = np.zeros((12, 12, 4), np.uint8)
    reference[2:6, 2:6, 1:3] = 1
    reference[7:11, 7:11, 1:3] = 2
    prediction = reference.copy()
    prediction[7:11, 7:11, 1:3] = 0  # class 2 missed: Dice 0
    for name in ("c1", "c2"):
        _write(reference, tmp_path / "gt" / f"{name}.nii.gz")
        _write(prediction, tmp_path / "pred" / f"{name}.nii.gz")
    description = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "blob": 1, "other": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    return tmp_path / "pred", tmp_path / "gt"


OPTION_CASES = {
    "defaults": ([], None, ["│ 1  ", "│ 2  "]),
    "labels_and_json": (["--labels", "dataset.json", "--json", "out/s.json"], "out/s.json", ["1 blob", "2 other"]),
    "labels_folder": (["--labels", "."], None, ["1 blob", "2 other"]),
}


@pytest.mark.parametrize(("options", "json_path", "rows"), OPTION_CASES.values(), ids=OPTION_CASES.keys())
def test_evaluate_prints_table_and_writes_summary(folders, tmp_path, monkeypatch, options, json_path, rows):
    monkeypatch.chdir(tmp_path)
    predictions, references = folders
    result = CliRunner().invoke(_app(), ["evaluate", str(predictions), str(references), "-j", "0", *options])
    assert result.exit_code == 0, result.output
    summary_path = tmp_path / json_path if json_path else predictions / "summary.json"
    assert f"summary: {Path(json_path) if json_path else summary_path}" in result.output
    for row in rows:
        assert row in result.output
    assert "mean" in result.output and "0.5000" in result.output  # (1.0 + 0.0) / 2
    summary = json.loads(summary_path.read_text())
    assert summary["foreground_mean"]["Dice"] == pytest.approx(0.5)
    assert summary["mean"]["2"]["Dice"] == 0.0


def test_evaluate_error_is_a_one_line_masksam_error(folders):
    predictions, references = folders
    (predictions / "c2.nii.gz").unlink()
    result = CliRunner().invoke(_app(), ["evaluate", str(predictions), str(references), "-j", "0"])
    assert isinstance(result.exception, DatasetError)
    assert "c2" in str(result.exception) and "\n" not in str(result.exception)
    assert not (predictions / "summary.json").exists()


def test_help_states_the_empty_mask_rule():
    result = CliRunner().invoke(_app(), ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "diagonal" in result.output and "Dice 1" in result.output


# ------------------------------------------------------------------- nnU-Net conventions, the installed script

MASKSAM = shutil.which("masksam")
needs_script = pytest.mark.skipif(MASKSAM is None, reason="the masksam console script is not installed")


def run_masksam(*args: str | Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([MASKSAM, *map(str, args)], capture_output=True, text=True, timeout=120, env=environment)


@pytest.fixture
def nnunet_folders(tmp_path: Path) -> tuple[Path, Path]:
    """(predictions of an untrained model: background only, labelsTs with one blob per case)."""
    reference = np.zeros((12, 12, 4), np.uint8)
    reference[2:6, 2:6, 1:3] = 1
    for name in ("c1", "c2"):
        _write(reference, tmp_path / "labelsTs" / f"{name}.nii.gz")
        _write(np.zeros_like(reference), tmp_path / "pred" / f"{name}.nii.gz")
    return tmp_path / "pred", tmp_path / "labelsTs"


@needs_script
@pytest.mark.slow
def test_in_nnunets_order_nothing_is_written_into_the_references(nnunet_folders) -> None:
    predictions, references = nnunet_folders
    before = sorted(path.name for path in references.iterdir())
    result = run_masksam("evaluate", references, predictions, "-j", "0")  # nnUNetv2_evaluate_folder's order
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"masksam: error: {references}: named like a reference folder, so summary.json is not written into it; if "
        "the folders are swapped, masksam evaluate takes PREDICTION_DIR first and REFERENCE_DIR second "
        "(nnUNetv2_evaluate_folder takes the reference first); otherwise pass --json with a file elsewhere"
    )
    assert sorted(path.name for path in references.iterdir()) == before


@needs_script
@pytest.mark.slow
def test_json_into_the_reference_folder_is_refused(nnunet_folders) -> None:
    predictions, references = nnunet_folders
    result = run_masksam("evaluate", predictions, references, "-j", "0", "--json", references / "summary.json")
    assert result.returncode == 1
    assert "would be written into the reference folder" in result.stderr
    assert not (references / "summary.json").exists()


@pytest.mark.slow  # two runs of the console script: about 7 s
@needs_script
def test_references_without_foreground_get_a_swap_warning(nnunet_folders, tmp_path: Path) -> None:
    predictions, references = nnunet_folders
    swapped = tmp_path / "gt_copy"
    shutil.copytree(references, swapped)  # not named labels*, so only the empty "references" can tell
    labels = tmp_path / "dataset.json"
    description = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1}, "numTraining": 2}
    labels.write_text(json.dumps({**description, "file_ending": ".nii.gz"}))
    result = run_masksam("evaluate", swapped, predictions, "-j", "0", "--labels", labels, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    assert f"masksam: warning: no reference in {predictions} holds a foreground label; are the folders swapped?" in (
        " ".join(result.stderr.split())
    )
    without_labels = run_masksam("evaluate", swapped, predictions, "-j", "0", "--json", tmp_path / "t.json")
    assert without_labels.returncode == 1
    assert "the folders are swapped: masksam evaluate takes PREDICTION_DIR first" in without_labels.stderr


@needs_script
@pytest.mark.slow  # about 12 s: the script three times
def test_cases_and_only_predicted_choose_the_cases_scored(tmp_path: Path) -> None:
    reference = np.zeros((12, 12, 4), np.uint8)
    reference[2:6, 2:6, 1:3] = 1
    for name in ("c1", "c2", "c3"):
        _write(reference, tmp_path / "gt" / f"{name}.nii.gz")
    for name in ("c1", "c2"):
        _write(reference, tmp_path / "pred" / f"{name}.nii.gz")
    predictions, references = tmp_path / "pred", tmp_path / "gt"

    refused = run_masksam("evaluate", predictions, references, "-j", "0")
    assert refused.returncode == 1 and "pass --only-predicted to score the predicted cases only" in refused.stderr

    chosen = run_masksam("evaluate", predictions, references, "-j", "0", "--cases", "c2")
    assert chosen.returncode == 0, chosen.stderr
    summary = json.loads((predictions / "summary.json").read_text())
    assert [case["case"] for case in summary["metric_per_case"]] == ["c2"]

    predicted = run_masksam("evaluate", predictions, references, "-j", "0", "--only-predicted")
    assert predicted.returncode == 0, predicted.stderr
    assert "--only-predicted: 1 reference case(s) without a prediction left out (c3)" in predicted.stderr
    summary = json.loads((predictions / "summary.json").read_text())
    assert [case["case"] for case in summary["metric_per_case"]] == ["c1", "c2"]
    assert summary["reference_cases_without_prediction"] == ["c3"]
