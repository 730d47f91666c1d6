"""`masksam evaluate` through typer: the table, the summary path, options, and errors as MaskSamError."""

from __future__ import annotations

import json
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
