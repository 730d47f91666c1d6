"""A built-in synthetic dataset: small cardiac-MRI-like short-axis stacks in nnU-Net raw layout.

Every case is a stack of short-axis slices through a torso: a bright left-ventricle cavity (LV) with dark
papillary muscles, a ring of myocardium (MYO) around it that closes at the apex, and a bright crescent-shaped
right ventricle (RV) beside it with a thin unlabelled wall, in front of lungs, subcutaneous fat and textured
soft tissue. Positions, sizes and orientations vary per case; the image has a smooth multiplicative bias
field, slice-to-slice intensity and position jitter (separate breath-holds), partial-volume blur and Rician
noise. Spacing is anisotropic (1.5 x 1.5 x 8 mm by default) and every third case has an oblique affine.

Labels follow ACDC: background 0, RV 1, MYO 2, LV 3. Arrays are in file order (x, y, z) with z the slice axis.
Everything is drawn from ``numpy.random.default_rng([seed, case_index])``, so a case does not depend on how
many other cases are written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from masksam.errors import DatasetError
from masksam.files import create_temporary_folder

PHANTOM_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
PARAMETERS_FILE = "phantom.json"
# Bump when the generator changes, so an old folder is not reused as if it were the new dataset.
GENERATOR_VERSION = 1
# In-plane sizes below are for a 192 mm field of view and scale with the actual one.
_REFERENCE_FOV_MM = 192.0


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def phantom_affine(index: int, spacing: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Voxel-to-world matrix of case ``index``: axis-aligned with a random origin, oblique for every third case.

    Args:
        index: Case index (cases 2, 5, 8, ... are oblique).
        spacing: Voxel size in mm per array axis (the column norms of the result).
        rng: Random generator of the case.

    Returns:
        (4, 4) affine.
    """
    affine = np.eye(4)
    rotation = np.eye(3)
    if index % 3 == 2:
        yaw, tilt = rng.uniform(-0.5, 0.5), rng.uniform(-0.25, 0.25)  # radians
        about_z = np.eye(3)
        about_z[:2, :2] = _rotation(yaw)
        about_x = np.eye(3)
        about_x[1:, 1:] = _rotation(tilt)
        rotation = about_z @ about_x
    affine[:3, :3] = rotation @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = rng.uniform(-120.0, 120.0, size=3)
    return affine


def generate_phantom_case(
    rng: np.random.Generator, *, shape: Sequence[int] = (128, 128, 10), spacing: Sequence[float] = (1.5, 1.5, 8.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one cardiac-MRI-like image and its label map.

    Args:
        rng: Random generator of the case (all randomness comes from it).
        shape: (X, Y, Z) array shape in file order; Z is the slice axis.
        spacing: Voxel size in mm per array axis.

    Returns:
        (image (X, Y, Z) int16 with values in about 0..2000, label (X, Y, Z) uint8 with values in
        ``PHANTOM_LABELS``).
    """
    nx, ny, nz = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    scale = min(nx * sx, ny * sy) / _REFERENCE_FOV_MM
    # Voxel-centre coordinates in mm, centred on the volume: (X, 1, 1), (1, Y, 1), (1, 1, Z).
    x = ((np.arange(nx) - (nx - 1) / 2) * sx)[:, None, None]
    y = ((np.arange(ny) - (ny - 1) / 2) * sy)[None, :, None]
    z = ((np.arange(nz) - (nz - 1) / 2) * sz)[None, None, :]
    z_top = (nz - 1) / 2 * sz

    # Torso: an ellipse filling most of the field of view, a fat layer under the skin, two lungs.
    body_angle = rng.uniform(-0.2, 0.2)
    bu, bv = _rotated(x, y, (0.0, 0.0), body_angle)
    body_a, body_b = 88.0 * scale * rng.uniform(0.95, 1.1), 70.0 * scale * rng.uniform(0.9, 1.05)
    body_radius = (bu / body_a) ** 2 + (bv / body_b) ** 2  # (X, Y, 1)
    fat_thickness = rng.uniform(4.0, 8.0) * scale
    inner_radius = (bu / (body_a - fat_thickness)) ** 2 + (bv / (body_b - fat_thickness)) ** 2
    lung_radius = np.minimum(
        ((bu - 54.0 * scale) / (21.0 * scale)) ** 2 + (bv / (40.0 * scale)) ** 2,
        ((bu + 56.0 * scale) / (19.0 * scale)) ** 2 + ((bv + 4.0 * scale) / (38.0 * scale)) ** 2,
    )

    # Heart: LV centre near the middle, jittered per slice (breath-holds); ellipsoids closing towards the apex.
    centre = rng.uniform(-10.0, 10.0, size=2) * scale
    jitter = rng.normal(0.0, 1.0, size=(2, nz)) * scale  # (2, Z) mm
    cx, cy = centre[0] + jitter[0][None, None, :], centre[1] + jitter[1][None, None, :]  # (1, 1, Z)
    angle = rng.uniform(0.0, np.pi)
    lv_a = rng.uniform(18.0, 25.0) * scale
    lv_b = lv_a * rng.uniform(0.8, 1.0)
    wall = rng.uniform(6.0, 9.5) * scale
    z_base = z_top + rng.uniform(0.0, 0.5) * sz
    long_axis = rng.uniform(0.8, 0.95) * nz * sz
    depth = np.maximum(z_base - z, 0.0)  # (1, 1, Z) mm below the base
    u, v = _rotated(x, y, (cx, cy), angle)  # (X, Y, Z) in the LV's frame
    cavity = (u / lv_a) ** 2 + (v / lv_b) ** 2 + (depth / long_axis) ** 2 <= 1.0
    outer = (u / (lv_a + wall)) ** 2 + (v / (lv_b + wall)) ** 2 + (depth / (long_axis + wall)) ** 2 <= 1.0

    # RV: an ellipse beside the LV minus the LV's outer wall -> a crescent; shorter than the LV.
    direction = rng.uniform(0.0, 2.0 * np.pi)
    rv_across = rng.uniform(13.0, 20.0) * scale
    rv_along = (lv_a + wall) * rng.uniform(1.15, 1.45)
    rv_offset = lv_a + wall + rv_across * rng.uniform(-0.2, 0.25)
    rv_long = long_axis * rng.uniform(0.7, 0.85)
    p, q = _rotated(x, y, (cx, cy), direction)
    rv_radius = ((p - rv_offset) / rv_across) ** 2 + (q / rv_along) ** 2 + (depth / rv_long) ** 2
    rv_wall = 2.5 * scale
    rv_wall_radius = ((p - rv_offset) / (rv_across + rv_wall)) ** 2 + (q / (rv_along + rv_wall)) ** 2
    rv_wall_radius = rv_wall_radius + (depth / (rv_long + rv_wall)) ** 2
    rv = (rv_radius <= 1.0) & ~outer
    rv_free_wall = (rv_wall_radius <= 1.0) & ~outer & ~rv

    # Two papillary muscles: dark blobs inside the cavity near the wall, labelled LV as in ACDC.
    papillary = np.zeros_like(cavity)
    for offset_angle in rng.uniform(0.0, 2.0 * np.pi, size=2):
        pu, pv = 0.65 * lv_a * np.cos(offset_angle), 0.65 * lv_b * np.sin(offset_angle)
        papillary |= ((u - pu) ** 2 + (v - pv) ** 2 <= (rng.uniform(2.5, 4.0) * scale) ** 2) & cavity

    label = np.zeros((nx, ny, nz), np.uint8)
    label[rv] = PHANTOM_LABELS["RV"]
    label[outer & ~cavity] = PHANTOM_LABELS["MYO"]
    label[cavity] = PHANTOM_LABELS["LV"]

    # Intensities of a bSSFP-like cine image (blood bright, myocardium dark), per-case contrast jitter.
    level = {
        "tissue": rng.uniform(0.35, 0.5),
        "fat": rng.uniform(0.75, 0.9),
        "lung": rng.uniform(0.04, 0.1),
        "myocardium": rng.uniform(0.18, 0.28),
        "lv_blood": rng.uniform(0.85, 1.0),
        "rv_blood": rng.uniform(0.75, 0.95),
    }
    texture = ndimage.gaussian_filter(rng.standard_normal((nx, ny, nz)), sigma=(2.5 / sx, 2.5 / sy, 0.0))
    texture /= texture.std() + 1e-8
    body = np.broadcast_to(body_radius <= 1.0, label.shape)
    image = np.where(body, level["tissue"] * (1.0 + 0.15 * texture), 0.0)
    image = np.where(np.broadcast_to((inner_radius > 1.0) & (body_radius <= 1.0), label.shape), level["fat"], image)
    image = np.where(np.broadcast_to(lung_radius <= 1.0, label.shape), level["lung"] * (1.0 + 0.3 * texture), image)
    image = np.where(outer | rv_free_wall, level["myocardium"] * (1.0 + 0.05 * texture), image)
    image = np.where(rv, level["rv_blood"], image)
    image = np.where(cavity, level["lv_blood"], image)
    image = np.where(papillary, level["myocardium"], image)

    # Acquisition: partial-volume blur in-plane, smooth bias field, per-slice gain, Rician noise.
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.0))
    xn, yn, zn = x / (nx * sx / 2), y / (ny * sy / 2), z / max(nz * sz / 2, 1e-8)  # about -1..1
    terms = [xn, yn, zn, xn**2, yn**2, xn * yn]
    bias = np.exp(sum(c * t for c, t in zip(rng.normal(0.0, 0.12, size=len(terms)), terms, strict=True)))
    gain = rng.uniform(0.93, 1.07, size=nz)[None, None, :]
    image = image * bias * gain
    sigma = rng.uniform(0.025, 0.045)
    real = image + rng.normal(0.0, sigma, size=image.shape)
    imaginary = rng.normal(0.0, sigma, size=image.shape)
    magnitude = np.sqrt(real**2 + imaginary**2) * rng.uniform(900.0, 1300.0)
    return np.round(magnitude).astype(np.int16), label


def _rotated(x: np.ndarray, y: np.ndarray, centre: tuple, angle: float) -> tuple[np.ndarray, np.ndarray]:
    # Coordinates relative to centre in a frame rotated by angle (broadcasts over the shapes of x, y and centre).
    dx, dy = x - centre[0], y - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _parameters(num_train: int, num_test: int, shape: Sequence[int], spacing: Sequence[float], seed: int) -> dict:
    return {
        "generator": "masksam.data.phantoms",
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "seed": int(seed),
    }


def _existing_parameters(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / PARAMETERS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def write_phantom_dataset(
    out_dir: Path,
    *,
    num_train: int = 12,
    num_test: int = 4,
    shape: Sequence[int] = (128, 128, 10),
    spacing: Sequence[float] = (1.5, 1.5, 8.0),
    seed: int = 0,
) -> Path:
    """Writes the synthetic cardiac dataset in nnU-Net raw layout, or reuses an identical one.

    Layout: ``dataset.json`` (channel ``MRI``, labels background/RV/MYO/LV), ``imagesTr/phantom_000_0000.nii.gz``
    and ``labelsTr/phantom_000.nii.gz`` for the training cases, ``imagesTs/`` and ``labelsTs/`` for the held-out
    ones (numbered after the training cases), and ``phantom.json`` recording the parameters. The folder is
    written under a temporary name beside ``out_dir`` and renamed into place when complete.

    Args:
        out_dir: Dataset folder to create (must not exist, be empty, or hold this very dataset).
        num_train: Training cases (``numTraining``).
        num_test: Held-out cases with labels.
        shape: (X, Y, Z) array shape in file order, Z the slice axis.
        spacing: Voxel size in mm per array axis.
        seed: Seed; the same parameters give identical arrays.

    Returns:
        ``out_dir``.

    Raises:
        DatasetError: ``out_dir`` holds something else (another dataset or other parameters).
        ValueError: A count is negative, there is no training case, or the shape or spacing is not 3 positive values.
    """
    out_dir = Path(out_dir)
    if num_train < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train} and {num_test}")
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing must be 3 positive values, got {tuple(shape)} and {tuple(spacing)}")
    parameters = _parameters(num_train, num_test, shape, spacing, seed)
    if _is_nonempty_dir(out_dir) or (out_dir.exists() and not out_dir.is_dir()):
        return _reuse_or_refuse(out_dir, parameters)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = create_temporary_folder(out_dir)  # mkdir()'s mode, not mkdtemp's private 0o700
    try:
        _write_cases(staging, parameters)
        try:
            os.replace(staging, out_dir)  # atomic; replaces out_dir only if it is an empty folder
        except OSError:
            # Another writer finished first (or the folder filled up meanwhile): reuse or refuse as above.
            return _reuse_or_refuse(out_dir, parameters)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _reuse_or_refuse(out_dir: Path, parameters: dict) -> Path:
    if _existing_parameters(out_dir) == parameters:
        return out_dir
    raise DatasetError(
        f"{out_dir}: exists and is not the phantom dataset with these parameters ({_describe(parameters)}); "
        "choose another folder or delete it"
    )


def _describe(parameters: dict) -> str:
    keys = ("num_train", "num_test", "shape", "spacing", "seed")
    return ", ".join(f"{key}={parameters[key]}" for key in keys)


def _write_cases(root: Path, parameters: dict) -> None:
    num_train, num_test, seed = parameters["num_train"], parameters["num_test"], parameters["seed"]
    shape, spacing = tuple(parameters["shape"]), tuple(parameters["spacing"])
    for folder in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if num_test else ()):
        (root / folder).mkdir()
    for index in range(num_train + num_test):
        subset = "Tr" if index < num_train else "Ts"
        rng = np.random.default_rng([seed, index])
        image, label = generate_phantom_case(rng, shape=shape, spacing=spacing)
        affine = phantom_affine(index, spacing, rng)
        case_id = f"phantom_{index:03d}"
        _save(image, affine, root / f"images{subset}" / f"{case_id}_0000.nii.gz")
        _save(label, affine, root / f"labels{subset}" / f"{case_id}.nii.gz")
    description = {
        "name": "CardiacPhantom",
        "description": (
            "Synthetic cardiac-MRI-like short-axis stacks written by masksam.data.phantoms "
            "(RV, LV myocardium, LV cavity); labelsTs holds the labels of the held-out cases"
        ),
        "channel_names": {"0": "MRI"},
        "labels": dict(PHANTOM_LABELS),
        "numTraining": num_train,
        "numTest": num_test,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    (root / PARAMETERS_FILE).write_text(json.dumps(parameters, indent=2) + "\n")


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
