"""Reading an nnU-Net v2 raw dataset: ``dataset.json``, case discovery and NIfTI volumes with their geometry.

Layout (nnU-Net v2)::

    DATASET_DIR/
      dataset.json                 channel_names, labels, numTraining, file_ending
      imagesTr/CASE_0000.nii.gz    one file per channel (4-digit channel index)
      labelsTr/CASE.nii.gz         integer label map
      imagesTs/CASE_0000.nii.gz    optional test images

Arrays keep the file's voxel order (nibabel's (x, y, z)); nothing is reoriented, so the affine read here is
exactly the one written back at export.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from masksam.errors import DatasetError

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class DatasetDescription:
    """The fields of ``dataset.json`` that masksam uses.

    Attributes:
        name: Dataset name (``name`` key, else the folder name).
        channel_names: Channel index -> modality name, e.g. ``{0: "CT"}``; sorted by index.
        labels: Label name -> integer value; must contain ``background: 0``.
        num_training: ``numTraining``: how many training cases the folder must hold.
        file_ending: File ending of every image and label, e.g. ``".nii.gz"``.
    """

    name: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str

    @property
    def num_channels(self) -> int:
        """Number of input channels (modalities)."""
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """K: number of classes including background (label values are 0..K-1)."""
        return max(self.labels.values()) + 1

    @property
    def label_values(self) -> list[int]:
        """Sorted label values declared in ``dataset.json``."""
        return sorted(set(self.labels.values()))


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case.

    Attributes:
        case_id: Case identifier, e.g. ``patient001_frame01``.
        images: One path per channel, in channel order (a path may not exist; validation reports it).
        label: Label path, or None for test cases.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class Geometry:
    """Where a voxel array lies in world space, as read from its NIfTI header.

    Attributes:
        shape: Array shape in file order (x, y, z).
        affine: 4x4 voxel-to-world matrix (nibabel's best affine: sform, else qform).
        spacing: Voxel size per array axis in mm (column norms of the affine).
        orientation: Axis codes, e.g. ``("R", "A", "S")``.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float]
    orientation: tuple[str, str, str]

    def to_json(self) -> dict:
        """Returns a JSON-serialisable dict."""
        return {
            "shape": list(self.shape),
            "affine": np.asarray(self.affine, dtype=float).tolist(),
            "spacing": list(self.spacing),
            "orientation": list(self.orientation),
        }

    @classmethod
    def from_json(cls, data: dict) -> Geometry:
        """Inverse of :meth:`to_json`."""
        return cls(
            shape=tuple(int(s) for s in data["shape"]),
            affine=np.asarray(data["affine"], dtype=np.float64),
            spacing=tuple(float(s) for s in data["spacing"]),
            orientation=tuple(data["orientation"]),
        )

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
        """Builds the geometry of an array of ``shape`` placed by ``affine``."""
        affine = np.asarray(affine, dtype=np.float64)
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return cls(
            shape=tuple(int(s) for s in shape[:3]),
            affine=affine,
            spacing=spacing,
            orientation=tuple(nib.aff2axcodes(affine)),
        )


@dataclass
class Volume:
    """A 3D array with its geometry.

    Attributes:
        array: (X, Y, Z) voxel values in file order.
        geometry: Its shape, affine, spacing and orientation.
        path: The file it was read from.
    """

    array: np.ndarray
    geometry: Geometry
    path: Path


def read_dataset_json(dataset_dir: Path) -> DatasetDescription:
    """Reads and checks ``DATASET_DIR/dataset.json``.

    Args:
        dataset_dir: The nnU-Net raw dataset folder.

    Returns:
        The parsed description.

    Raises:
        DatasetError: The file is missing, is not JSON, or lacks or mistypes a required key.
    """
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"{path}: dataset.json not found; write one with channel_names, labels, "
            "numTraining and file_ending (nnU-Net v2 format)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); fix the file") from error
    missing = [key for key in ("channel_names", "labels", "numTraining", "file_ending") if key not in raw]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; add them (nnU-Net v2 format)")
    try:
        channel_names = {int(k): str(v) for k, v in sorted(raw["channel_names"].items(), key=lambda kv: int(kv[0]))}
    except (AttributeError, ValueError) as error:
        raise DatasetError(f"{path}: channel_names must map '0', '1', ... to modality names") from error
    if sorted(channel_names) != list(range(len(channel_names))) or not channel_names:
        raise DatasetError(f"{path}: channel_names keys must be 0..C-1, got {sorted(channel_names)}")
    labels: dict[str, int] = {}
    for name, value in raw["labels"].items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetError(
                f"{path}: label '{name}' has value {value!r}; masksam needs one integer per "
                "label (region-based labels are not supported)"
            )
        labels[str(name)] = value
    values = sorted(labels.values())
    if not values or values[0] != 0 or values != list(range(len(values))):
        raise DatasetError(f"{path}: label values must be 0..K-1 with 0 = background, got {values}")
    file_ending = raw["file_ending"]
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise DatasetError(f"{path}: file_ending must look like '.nii.gz', got {file_ending!r}")
    try:
        num_training = int(raw["numTraining"])
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{path}: numTraining must be an integer, got {raw['numTraining']!r}") from error
    return DatasetDescription(
        name=str(raw.get("name") or Path(dataset_dir).resolve().name),
        channel_names=channel_names,
        labels=labels,
        num_training=num_training,
        file_ending=file_ending,
    )


def split_channel_name(file_name: str, file_ending: str) -> tuple[str, int] | None:
    """Splits ``CASE_0003.nii.gz`` into ``("CASE", 3)``; None if the name does not follow that pattern."""
    if not file_name.endswith(file_ending):
        return None
    match = _CHANNEL_SUFFIX.match(file_name[: -len(file_ending)])
    return (match["case"], int(match["channel"])) if match else None


def list_cases(dataset_dir: Path, description: DatasetDescription, subset: str = "Tr") -> list[CaseFiles]:
    """Lists the cases of ``imagesTr``/``labelsTr`` (``subset="Tr"``) or ``imagesTs`` (``"Ts"``).

    A case exists if it has a label file (training) or any channel file. Expected channel paths are
    returned whether or not they exist, so validation can name the missing ones.

    Args:
        dataset_dir: The nnU-Net raw dataset folder.
        description: Its parsed ``dataset.json``.
        subset: ``"Tr"`` or ``"Ts"``.

    Returns:
        Cases sorted by id.
    """
    dataset_dir = Path(dataset_dir)
    ending = description.file_ending
    image_dir = dataset_dir / f"images{subset}"
    label_dir = dataset_dir / "labelsTr" if subset == "Tr" else None
    case_ids: set[str] = set()
    if image_dir.is_dir():
        for path in image_dir.iterdir():
            parsed = split_channel_name(path.name, ending)
            if parsed is not None:
                case_ids.add(parsed[0])
    if label_dir is not None and label_dir.is_dir():
        case_ids.update(p.name[: -len(ending)] for p in label_dir.iterdir() if p.name.endswith(ending))
    cases = []
    for case_id in sorted(case_ids):
        images = tuple(image_dir / f"{case_id}_{c:04d}{ending}" for c in description.channel_names)
        label = label_dir / f"{case_id}{ending}" if label_dir is not None else None
        cases.append(CaseFiles(case_id=case_id, images=images, label=label))
    return cases


def read_volume(path: Path, *, case_id: str = "", is_label: bool = False) -> Volume:
    """Reads one NIfTI file as a 3D array with its geometry.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        case_id: Case the file belongs to (used in error messages).
        is_label: Read the stored integers unchanged (no scaling to float).

    Returns:
        The volume; images are float32, labels keep their stored (integer or float) dtype.

    Raises:
        DatasetError: The file is missing, empty, unreadable, or not 3D.
    """
    path = Path(path)
    where = f"case {case_id}, file {path}" if case_id else f"file {path}"
    if not path.is_file():
        raise DatasetError(f"{where}: file not found; add it or remove the case")
    if path.stat().st_size == 0:
        raise DatasetError(f"{where}: file is empty; re-export it")
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj) if is_label else image.get_fdata(dtype=np.float32)
        affine = image.affine
    except Exception as error:  # nibabel raises many types for corrupt files
        raise DatasetError(f"{where}: unreadable NIfTI ({type(error).__name__}: {error}); re-export it") from error
    # Trailing singleton axes (e.g. (X, Y, Z, 1)) are dropped; anything else must be 3D.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DatasetError(
            f"{where}: expected a 3D volume, got shape {array.shape}; split 4D series into one file per channel"
        )
    if not is_label:
        array = np.ascontiguousarray(array, dtype=np.float32)
    return Volume(array=array, geometry=Geometry.from_affine(array.shape, affine), path=path)


def write_volume(array: np.ndarray, affine: np.ndarray, path: Path, *, reference: Path | None = None) -> None:
    """Writes a 3D array as NIfTI atomically (temporary file, then rename).

    Args:
        array: (X, Y, Z) array in file order.
        affine: 4x4 voxel-to-world matrix.
        path: Destination (``.nii`` or ``.nii.gz``).
        reference: Optional NIfTI file whose header (units, codes, description) is copied.
    """
    import os

    from masksam.files import create_temporary_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = nib.load(str(reference)).header.copy() if reference is not None else None
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64), header=header)
    image.set_data_dtype(np.asarray(array).dtype)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    fd, tmp = create_temporary_file(path, suffix=suffix)
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
