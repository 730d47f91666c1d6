"""Checking an nnU-Net raw dataset every problem is reported, not just the first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masksam.data.io import (
    CaseFiles,
    DatasetDescription,
    list_cases,
    read_dataset_json,
    read_volume,
    split_channel_name,
)
from masksam.data.parallel import map_cases
from masksam.errors import DatasetError

# World-space tolerance when comparing image and label affines (mm; relative part for large coordinates).
AFFINE_ATOL = 1e-3
AFFINE_RTOL = 1e-5


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset.

    Attributes:
        case: Case id, or ``""`` for dataset-level problems.
        file: The offending file (or folder).
        message: What is wrong and how to fix it.
    """

    case: str
    file: str
    message: str

    def __str__(self) -> str:
        where = f"case {self.case}, " if self.case else ""
        return f"{where}{self.file}: {self.message}"


class DatasetValidationError(DatasetError):
    """A dataset failed validation; ``problems`` lists every problem found."""

    def __init__(self, dataset_dir: Path, problems: list[DatasetProblem]):
        self.dataset_dir = Path(dataset_dir)
        self.problems = list(problems)
        first = "; ".join(str(p) for p in problems[:3])
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        super().__init__(f"dataset {dataset_dir} has {len(problems)} problem(s), nothing was written: {first}{more}")


def _check_file_endings(dataset_dir: Path, description: DatasetDescription) -> list[DatasetProblem]:
    problems = []
    ending = description.file_ending
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        directory = dataset_dir / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.name.startswith("."):
                continue
            if not path.name.endswith(ending):
                problems.append(
                    DatasetProblem(
                        "",
                        str(path),
                        f"does not end with file_ending '{ending}' of dataset.json; rename the file or fix file_ending",
                    )
                )
            elif folder.startswith("images") and split_channel_name(path.name, ending) is None:
                problems.append(
                    DatasetProblem(
                        "",
                        str(path),
                        f"image name lacks the channel suffix _XXXX (e.g. CASE_0000{ending}); rename it",
                    )
                )
    return problems


def nonfinite_intensities(array: np.ndarray) -> str | None:
    """``"N NaN and M Inf intensities"`` when an image has any, else None."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = array[~finite]
    return f"{int(np.isnan(bad).sum())} NaN and {int(np.isinf(bad).sum())} Inf intensities"


def _reason(error: DatasetError) -> str:
    # read_volume's messages start with "case X, file Y: "; the problem already names case and file.
    return str(error).split(": ", 1)[-1]


def check_case(args: tuple[CaseFiles, DatasetDescription]) -> list[DatasetProblem]:
    """Checks one training case: files present, readable, consistent in shape/affine, values valid.

    Args:
        args: The case's files and the dataset description (one tuple so it can be mapped in a pool).

    Returns:
        The problems found (empty if the case is fine).
    """
    case, description = args
    problems: list[DatasetProblem] = []
    volumes = []
    for channel, path in enumerate(case.images):
        if not path.is_file():
            problems.append(
                DatasetProblem(
                    case.case_id,
                    str(path),
                    f"missing channel {channel} ('{description.channel_names[channel]}') file; add it",
                )
            )
            continue
        try:
            volume = read_volume(path, case_id=case.case_id)
        except DatasetError as error:
            problems.append(DatasetProblem(case.case_id, str(path), _reason(error)))
            continue
        nonfinite = nonfinite_intensities(volume.array)
        if nonfinite is not None:
            problems.append(DatasetProblem(case.case_id, str(path), f"{nonfinite}; fix or re-export the image"))
        volumes.append(volume)
    if case.label is not None:
        if not case.label.is_file():
            problems.append(DatasetProblem(case.case_id, str(case.label), "label file missing; add it to labelsTr"))
        else:
            try:
                label = read_volume(case.label, case_id=case.case_id, is_label=True)
            except DatasetError as error:
                problems.append(DatasetProblem(case.case_id, str(case.label), _reason(error)))
            else:
                values = np.unique(label.array)
                if not np.all(np.isfinite(values)) or not np.all(np.equal(np.mod(values[np.isfinite(values)], 1), 0)):
                    problems.append(
                        DatasetProblem(
                            case.case_id,
                            str(case.label),
                            "label values are not all integers; save an integer label map",
                        )
                    )
                else:
                    unknown = sorted(set(values.astype(np.int64).tolist()) - set(description.label_values))
                    if unknown:
                        problems.append(
                            DatasetProblem(
                                case.case_id,
                                str(case.label),
                                f"label values {unknown} "
                                f"are not in dataset.json labels {description.label_values}; "
                                "fix the label map or declare them",
                            )
                        )
                volumes.append(label)
    if volumes:
        reference = volumes[0]
        for other in volumes[1:]:
            if other.geometry.shape != reference.geometry.shape:
                problems.append(
                    DatasetProblem(
                        case.case_id,
                        str(other.path),
                        f"shape {other.geometry.shape} differs "
                        f"from {reference.path.name} {reference.geometry.shape}; resample "
                        "it onto the same grid",
                    )
                )
            elif not np.allclose(other.geometry.affine, reference.geometry.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL):
                problems.append(
                    DatasetProblem(
                        case.case_id,
                        str(other.path),
                        f"affine differs from "
                        f"{reference.path.name}; both must share one grid (copy the "
                        "image's header geometry to it)",
                    )
                )
    return problems


def validate_dataset(dataset_dir: Path, *, num_workers: int = 0, progress: bool = False) -> DatasetDescription:
    """Validates an nnU-Net raw dataset and returns its description if nothing is wrong.

    Checks: dataset.json, folders, file endings, missing channel or label files, empty or unreadable
    files, image/label shape and affine agreement, label values declared in dataset.json, NaN/Inf
    intensities, and at least ``numTraining`` training cases.

    Args:
        dataset_dir: The nnU-Net raw dataset folder.
        num_workers: Worker processes for reading cases (0 = this process).
        progress: Show a progress bar.

    Returns:
        The parsed ``dataset.json``.

    Raises:
        DatasetError: dataset.json itself is missing or malformed.
        DatasetValidationError: Any other problem; its ``problems`` lists all of them.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(f"{dataset_dir}: dataset folder not found; pass an nnU-Net raw dataset folder")
    description = read_dataset_json(dataset_dir)
    problems: list[DatasetProblem] = []
    for folder in ("imagesTr", "labelsTr"):
        if not (dataset_dir / folder).is_dir():
            problems.append(
                DatasetProblem(
                    "",
                    str(dataset_dir / folder),
                    "folder missing; nnU-Net raw layout needs imagesTr/ and labelsTr/",
                )
            )
    problems += _check_file_endings(dataset_dir, description)
    cases = list_cases(dataset_dir, description, "Tr")
    per_case = map_cases(
        check_case,
        [(case, description) for case in cases],
        num_workers=num_workers,
        description="validating",
        progress=progress,
    )
    for case_problems in per_case:
        problems += case_problems
    if len(cases) < description.num_training:
        problems.append(
            DatasetProblem(
                "",
                str(dataset_dir / "labelsTr"),
                f"found {len(cases)} training cases but "
                f"dataset.json says numTraining={description.num_training}; add the "
                "missing cases or correct numTraining",
            )
        )
    if problems:
        raise DatasetValidationError(dataset_dir, problems)
    return description
