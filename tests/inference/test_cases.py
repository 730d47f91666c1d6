"""Finding prediction cases: nnU-Net channel naming, per-case channel checks, ignored files."""

from __future__ import annotations

from pathlib import Path

import pytest

from masksam.errors import DatasetError
from masksam.inference.cases import find_case_of_file, find_prediction_cases


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


@pytest.mark.parametrize(
    ("names", "num_channels", "advice"),
    [
        pytest.param(
            ["x_0000.nii.gz", "x_0001.nii.gz"], 1,
            "case x: found channel file(s) _0000, _0001 in {dir} but the model needs 1 channel(s) (_0000.nii.gz); "
            "move x_0001.nii.gz out of the input folder, or predict with a model trained on 2 channels",
            id="extra-channel",
        ),
        pytest.param(
            ["x_0000.nii.gz"], 2,
            "case x: found channel file(s) _0000 in {dir} but the model needs 2 channel(s) (_0000 .. _0001.nii.gz); "
            "add the missing x_0001.nii.gz (every case needs all the channels the model was trained on)",
            id="missing-channel",
        ),
    ],
)  # fmt: skip
def test_channel_advice_says_which_file_to_move_or_add(tmp_path: Path, names, num_channels, advice) -> None:
    touch(tmp_path, *names)
    (case,) = find_prediction_cases(tmp_path, num_channels=num_channels)[0]
    assert case.problem == advice.format(dir=tmp_path)


@pytest.mark.parametrize(
    ("given", "num_channels", "case_id", "files", "problem"),
    [
        pytest.param("a_0000.nii.gz", 2, "a", ["a_0000.nii.gz", "a_0001.nii.gz"], False, id="channels-join"),
        pytest.param("a_0001.nii.gz", 2, "a", ["a_0000.nii.gz", "a_0001.nii.gz"], False, id="any-channel-names-it"),
        pytest.param("b_0000.nii", 1, "b", ["b_0000.nii"], False, id="nii"),
        pytest.param("brain.nii.gz", 1, "brain", ["brain.nii.gz"], False, id="any-name-one-channel"),
        pytest.param("brain.nii.gz", 2, "brain", ["brain.nii.gz"], True, id="any-name-two-channels"),
        pytest.param("a_0000.nii.gz", 1, "a", ["a_0000.nii.gz"], True, id="extra-sibling"),
    ],
)
def test_the_case_of_one_file(tmp_path: Path, given, num_channels, case_id, files, problem) -> None:
    touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "ab_0000.nii.gz", "b_0000.nii", "brain.nii.gz")
    case = find_case_of_file(tmp_path / given, num_channels=num_channels)
    assert case.case_id == case_id and [path.name for path in case.files] == files
    assert (case.problem is not None) == problem


def test_the_case_of_a_file_that_is_not_nifti(tmp_path: Path) -> None:
    touch(tmp_path, "a_0000.png")
    with pytest.raises(DatasetError, match="not a NIfTI file"):
        find_case_of_file(tmp_path / "a_0000.png", num_channels=1)
