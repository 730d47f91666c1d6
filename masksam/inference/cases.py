"""Finding the cases of a folder to predict: nnU-Net naming, one file per channel (``CASE_0000.nii.gz``, ...)."""

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
        expected = list(range(num_channels))
        files = tuple(found[c] for c in expected if c in found)
        problem = None
        if sorted(found) != expected:
            have = ", ".join(f"_{c:04d}" for c in sorted(found))
            need = f"_0000 .. _{num_channels - 1:04d}" if num_channels > 1 else "_0000"
            problem = (
                f"case {case_id}: found channel file(s) {have} in {input_dir} but the model needs {num_channels} "
                f"channel(s) ({need}{ending}); add or rename the files"
            )
        cases.append(PredictionCase(case_id=case_id, files=files, ending=ending, problem=problem))
    return cases, ignored
