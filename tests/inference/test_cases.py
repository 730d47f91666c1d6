"""Finding prediction cases: nnU-Net channel naming, per-case channel checks, ignored files."""

from __future__ import annotations

from pathlib import Path

import pytest

from masksam.errors import DatasetError
from masksam.inference.cases import find_prediction_cases


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.mark.parametrize(
    ("num_channels", "expected_problems"),
    [
        pytest.param(1, {"a": True, "b": False, "c": True, "d": False}, id="one-channel"),  # a has an extra channel
        pytest.param(2, {"a": False, "b": True, "c": True, "d": True}, id="two-channels"),
    ],
)
def test_cases_and_their_problems(tmp_path: Path, num_channels: int, expected_problems: dict[str, bool]) -> None:
    touch(
        tmp_path,
        "a_0000.nii.gz",
        "a_0001.nii.gz",
        "b_0000.nii.gz",
        "c_0001.nii.gz",
        "d_0000.nii",
        "notes.txt",
        "label.nii.gz",
    )
    (tmp_path / "sub_0000.nii.gz").mkdir()  # a folder with a case-like name is not a file
    cases, ignored = find_prediction_cases(tmp_path, num_channels=num_channels)
    assert {c.case_id: c.problem is not None for c in cases} == expected_problems
    assert [p.name for p in ignored] == ["label.nii.gz"]
    by_id = {c.case_id: c for c in cases}
    assert by_id["d"].ending == ".nii" and by_id["a"].ending == ".nii.gz"
    if num_channels == 2:
        assert [p.name for p in by_id["a"].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]
        problem = by_id["b"].problem
        assert "case b" in problem and "_0000" in problem and "needs 2 channel(s)" in problem and "\n" not in problem


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="input folder not found"):
        find_prediction_cases(tmp_path / "nope", num_channels=1)


def test_output_path_and_is_predicted(tmp_path: Path) -> None:
    touch(tmp_path / "in", "a_0000.nii.gz", "d_0000.nii")
    cases, _ = find_prediction_cases(tmp_path / "in", num_channels=1)
    by_id = {c.case_id: c for c in cases}
    out = tmp_path / "out"
    assert by_id["a"].output_path(out) == out / "a.nii.gz" and by_id["d"].output_path(out) == out / "d.nii"
    assert not by_id["a"].is_predicted(out)
    touch(out, "a.nii.gz", "d.npz")
    assert by_id["a"].is_predicted(out)
    assert not by_id["a"].is_predicted(out, probabilities=True)  # label map written, scores not yet
    assert not by_id["d"].is_predicted(out, probabilities=True)
    touch(out, "a.npz")
    assert by_id["a"].is_predicted(out, probabilities=True)
