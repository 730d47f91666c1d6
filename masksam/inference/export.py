"""Writing predictions: a label map with exactly the input image's header, and optional class scores.

The label map copies the input's NIfTI header (qform and sform with their codes, pixdim, units, orientation,
intents, extensions) and changes only what a label map must: the data type (uint8, or int16 beyond 255
labels), the scaling (slope 1, intercept 0) and the display range. Files are written to a temporary file in
the output folder and renamed over the target, so an interrupted run never leaves a truncated file, and a
path that is one of the input files is refused.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from masksam.errors import MaskSamError
from masksam.files import replace_atomically

NIFTI_ENDINGS = (".nii.gz", ".nii")


def label_dtype(max_value: int) -> np.dtype:
    """uint8 when every label fits, else int16."""
    if max_value <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_value <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    raise MaskSamError(f"label value {max_value} does not fit int16; masksam supports at most 32767 labels")


def nifti_ending(path: Path) -> str:
    """``.nii.gz`` or ``.nii`` (the ending of ``path``), ``.nii.gz`` for anything else."""
    name = Path(path).name
    return next((ending for ending in NIFTI_ENDINGS if name.endswith(ending)), ".nii.gz")


def probabilities_path(label_path: Path) -> Path:
    """``OUT/CASE.npz`` beside ``OUT/CASE.nii.gz``."""
    label_path = Path(label_path)
    return label_path.with_name(label_path.name[: -len(nifti_ending(label_path))] + ".npz")


def ensure_not_input(path: Path, inputs: Iterable[Path]) -> None:
    """Refuses to write over an input file.

    Raises:
        MaskSamError: ``path`` is (or resolves to) one of ``inputs``.
    """
    path = Path(path)
    target = path.resolve()
    for source in inputs:
        source = Path(source)
        same = path.exists() and source.exists() and os.path.samefile(path, source)
        if same or source.resolve() == target:
            raise MaskSamError(f"{path}: would overwrite the input file {source}; choose another output folder")


def _replace_atomically(path: Path, write) -> None:
    """``replace_atomically`` with the target's NIfTI ending on the temporary file (nibabel picks gzip by it)."""
    suffix = nifti_ending(path) if path.name.endswith(NIFTI_ENDINGS) else path.suffix
    replace_atomically(path, write, suffix=suffix)


def write_label_map(labels: np.ndarray, reference: Path, path: Path, *, inputs: Iterable[Path] = ()) -> Path:
    """Writes a label map on the reference image's grid with the reference's header.

    Args:
        labels: (X, Y, Z) integer label values in the reference file's voxel order ((X, Y, 1) for a 2D file,
            which is written 2D).
        reference: The input image the prediction was made from (its header is copied).
        path: Output ``.nii.gz`` or ``.nii`` file.
        inputs: Files that must not be overwritten (the case's input channels).

    Returns:
        ``path``.

    Raises:
        MaskSamError: ``labels`` does not fit the reference grid, or ``path`` is an input file.
    """
    path = Path(path)
    ensure_not_input(path, [reference, *inputs])
    source = nib.load(str(reference))
    spatial_shape = tuple(source.shape[:3]) if len(source.shape) >= 3 else (*source.shape, 1)
    if tuple(labels.shape) != spatial_shape:
        raise MaskSamError(
            f"{reference}: prediction of shape {labels.shape} does not fit the image's {spatial_shape}; "
            "this is a bug in masksam, please report it"
        )
    if len(source.shape) == 2:  # a 2D image (read as X × Y × 1) gets a 2D label map, as nnU-Net writes it
        labels = labels[..., 0]
    dtype = label_dtype(int(labels.max(initial=0)))
    header = source.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, int(labels.max(initial=0))
    # affine=None keeps the copied qform/sform (and their codes) exactly as they are in the input.
    image = nib.Nifti1Image(np.ascontiguousarray(labels, dtype=dtype), None, header=header)
    _replace_atomically(path, lambda tmp: nib.save(image, tmp))
    return path


def write_probabilities(
    class_maps: Iterable[np.ndarray], path: Path, *, class_names: list[str], inputs: Iterable[Path] = ()
) -> Path:
    """Writes class probabilities as ``.npz``, as nnU-Net does: key ``probabilities``, (K, z, y, x) float16.

    nnU-Net stores the array in its image readers' axis order, which reverses the NIfTI array's (x, y, z) (a 2D
    file of shape (x, y) gives (K, 1, y, x)); so ``probabilities[k]`` is class k's map transposed. A second key,
    ``class_names``, names the K classes in order (class k is the k-th label value of dataset.json).

    The maps are compressed into the archive one class at a time (zlib level 1: about 5x faster than numpy's
    default level for 10-20 % larger files), so the whole (K, X, Y, Z) array never has to be in memory.

    Args:
        class_maps: K arrays (X, Y, Z) in the input file's voxel order, in class order (a (K, X, Y, Z) array
            works too); each is written transposed, (Z, Y, X).
        path: Output ``.npz`` file.
        class_names: K names, in class order.
        inputs: Files that must not be overwritten.

    Returns:
        ``path``.

    Raises:
        MaskSamError: ``path`` is an input file, or cannot be written.
        ValueError: The number of maps is not the number of class names, or their shapes differ.
    """
    path = Path(path)
    ensure_not_input(path, inputs)

    def write(tmp: str) -> None:
        maps = iter(class_maps)
        first = np.asarray(next(maps))
        shape = (len(class_names), *first.shape[::-1])  # (K, Z, Y, X)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": False, "shape": shape}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            with archive.open("probabilities.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                count = 0
                for class_map in itertools.chain([first], maps):
                    if class_map.shape != first.shape:
                        raise ValueError(f"class map {count} has shape {class_map.shape}, not {first.shape}")
                    block = np.ascontiguousarray(np.asarray(class_map).T, dtype="<f2")  # (Z, Y, X) in C order
                    member.write(memoryview(block.reshape(-1).view(np.uint8)))
                    count += 1
            if count != len(class_names):
                raise ValueError(f"{count} class maps for {len(class_names)} class names")
            with archive.open("class_names.npy", "w") as member:
                np.lib.format.write_array(member, np.array(class_names))

    _replace_atomically(path, write)
    return path
