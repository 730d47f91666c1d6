"""Finding the cases to predict: nnU-Net naming, one file per channel (``CASE_0000.nii.gz``, ...), in a folder or
given as one file (the case of that file: its sibling channel files join it)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from masksam.data.io import split_channel_name
from masksam.errors import DatasetError
from masksam.inference.export import NIFTI_ENDINGS, probabilities_path


@dataclass(frozen=True)
class PredictionCase:
    """One case of an input folder.

    Attributes:
        case_id: ``CASE`` of ``CASE_0000.nii.gz``.
        files: The channel files in channel order (complete only when ``problem`` is None).
        ending: File ending of the channel files (``.nii.gz`` or ``.nii``), used for the output.
        problem: Why the case cannot be predicted (one line), or None.
    """

    case_id: str
    files: tuple[Path, ...]
    ending: str
    problem: str | None = None

    def output_path(self, output_dir: Path) -> Path:
        """``OUTPUT_DIR/CASE`` with the input's ending: where the case's label map goes."""
        return Path(output_dir) / f"{self.case_id}{self.ending}"

    def is_predicted(self, output_dir: Path, *, probabilities: bool = False) -> bool:
        """The case's outputs are all in ``output_dir`` (each is written whole or not at all, so present = done)."""
        label_map = self.output_path(output_dir)
        return label_map.is_file() and (not probabilities or probabilities_path(label_map).is_file())


def channel_problem(case_id: str, found: list[int], num_channels: int, folder: Path, ending: str) -> str | None:
    """Why a case's channel files do not fit the model (one line with the fix), or None when they do.

    Args:
        case_id: The case.
        found: Channel numbers of its files (``_0000`` is 0).
        num_channels: C, the model's channels.
        folder: Where the files are.
        ending: Their file ending.
    """
    expected = set(range(num_channels))
    extra, missing = sorted(set(found) - expected), sorted(expected - set(found))
    if not extra and not missing:
        return None
    have = ", ".join(f"_{c:04d}" for c in sorted(found))
    need = f"_0000 .. _{num_channels - 1:04d}" if num_channels > 1 else "_0000"
    start = (
        f"case {case_id}: found channel file(s) {have} in {folder} but the model needs {num_channels} channel(s) "
        f"({need}{ending})"
    )
    if missing:
        names = ", ".join(f"{case_id}_{c:04d}{ending}" for c in missing)
        return f"{start}; add the missing {names} (every case needs all the channels the model was trained on)"
    names = ", ".join(f"{case_id}_{c:04d}{ending}" for c in extra)
    return (
        f"{start}; move {names} out of the input folder, or predict with a model trained on {max(found) + 1} channels"
    )


def find_case_of_file(path: Path, *, num_channels: int) -> PredictionCase:
    """The case of one input file: ``CASE_0000.nii.gz`` with its sibling channel files (``CASE_0001``, ...).

    A file not named ``CASE_XXXX`` is a case of its own (named by the file) for a one-channel model.

    Raises:
        DatasetError: Not a NIfTI file.
    """
    path = Path(path)
    ending = next((e for e in NIFTI_ENDINGS if path.name.endswith(e)), None)
    if ending is None:
        raise DatasetError(f"{path}: not a NIfTI file (.nii.gz or .nii); pass a CASE_0000.nii.gz file or a folder")
    parsed = split_channel_name(path.name, ending)
    if parsed is None:
        case_id = path.name[: -len(ending)]
        problem = None
        if num_channels > 1:
            problem = (
                f"{path}: the model needs {num_channels} channels, one file each; name them {case_id}_0000{ending} .. "
                f"{case_id}_{num_channels - 1:04d}{ending} and pass the first"
            )
        return PredictionCase(case_id=case_id, files=(path,), ending=ending, problem=problem)
    case_id, _ = parsed
    found = {}
    for sibling in path.parent.iterdir():  # not glob: a case id may hold [ or *
        sibling_parsed = split_channel_name(sibling.name, ending)
        if sibling_parsed is not None and sibling_parsed[0] == case_id:
            found[sibling_parsed[1]] = sibling
    files = tuple(found[c] for c in range(num_channels) if c in found)
    problem = channel_problem(case_id, sorted(found), num_channels, path.parent, ending)
    return PredictionCase(case_id=case_id, files=files, ending=ending, problem=problem)


def find_prediction_cases(input_dir: Path, *, num_channels: int) -> tuple[list[PredictionCase], list[Path]]:
    """Groups the NIfTI files of a folder into cases and checks each has exactly the model's channels.

    Args:
        input_dir: Folder of ``CASE_XXXX.nii.gz`` (or ``.nii``) files.
        num_channels: C, channels the model needs (``_0000`` .. ``_{C-1:04d}``).

    Returns:
        (cases sorted by id, NIfTI files whose names do not follow the naming and were ignored).

    Raises:
        DatasetError: The folder does not exist.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DatasetError(f"{input_dir}: input folder not found; pass a folder of CASE_0000.nii.gz files with -i")
    channels: dict[tuple[str, str], dict[int, Path]] = defaultdict(dict)
    ignored = []
    for path in sorted(input_dir.iterdir()):
        ending = next((e for e in NIFTI_ENDINGS if path.name.endswith(e)), None)
        if ending is None or not path.is_file():
            continue
        parsed = split_channel_name(path.name, ending)
        if parsed is None:
            ignored.append(path)
            continue
        case_id, channel = parsed
        channels[(case_id, ending)][channel] = path
    cases = []
    for (case_id, ending), found in sorted(channels.items()):
        files = tuple(found[c] for c in range(num_channels) if c in found)
        problem = channel_problem(case_id, sorted(found), num_channels, input_dir, ending)
        cases.append(PredictionCase(case_id=case_id, files=files, ending=ending, problem=problem))
    return cases, ignored
