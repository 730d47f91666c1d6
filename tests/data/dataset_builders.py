"""Builders of small synthetic nnU-Net raw datasets, and the location of the real ACDC data."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ACDC = SHARED_DATA / "Dataset027_ACDC"


def oblique_affine(spacing: tuple[float, float, float] = (1.5, 1.2, 6.0)) -> np.ndarray:
    """A rotated, translated voxel-to-world matrix with the given voxel sizes."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [-80.5, 12.25, 40.0]
    return affine


def synthetic_case(shape=(40, 36, 8), seed=0, num_classes=3) -> tuple[np.ndarray, np.ndarray]:
    """A float image with a zero border and a label map with one blob per foreground class."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    image[2:-2, 2:-2, :] = rng.normal(100, 20, size=(shape[0] - 4, shape[1] - 4, shape[2]))
    label = np.zeros(shape, np.uint8)
    x, y = np.mgrid[: shape[0], : shape[1]]
    for c in range(1, num_classes):
        cx, cy = shape[0] * c / (num_classes + 1), shape[1] / 2
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (min(shape[:2]) / 8) ** 2
        label[disc, 1:-1] = c
        image[label == c] += 50 * c
    return image, label


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_dataset(
    root: Path,
    num_cases: int = 3,
    *,
    shape=(40, 36, 8),
    affine: np.ndarray | None = None,
    channels: dict | None = None,
    num_classes: int = 3,
    case_names: list[str] | None = None,
) -> Path:
    """Writes an nnU-Net raw dataset with ``num_cases`` synthetic cases; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    channels = channels or {"0": "MRI"}
    affine = np.diag([1.5, 1.5, 6.0, 1.0]) if affine is None else affine
    names = case_names or [f"case_{i:03d}" for i in range(num_cases)]
    for index, name in enumerate(names):
        image, label = synthetic_case(shape, seed=index, num_classes=num_classes)
        for channel in range(len(channels)):
            write_nifti(image + channel, affine, root / "imagesTr" / f"{name}_{channel:04d}.nii.gz")
        write_nifti(label, affine, root / "labelsTr" / f"{name}.nii.gz")
    labels = {"background": 0, **{f"class{c}": c for c in range(1, num_classes)}}
    description = {
        "channel_names": channels,
        "labels": labels,
        "numTraining": len(names),
        "file_ending": ".nii.gz",
        "name": "Synthetic",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def copy_acdc_cases(destination: Path, case_ids: list[str], crop: int = 96) -> Path:
    """Copies a few real ACDC cases, cropped in-plane around the centre, into a new raw dataset."""
    if not ACDC.is_dir():
        pytest.skip(f"real data not present at {ACDC}")
    for case_id in case_ids:
        for source, target in (
            (ACDC / "imagesTr" / f"{case_id}_0000.nii.gz", destination / "imagesTr" / f"{case_id}_0000.nii.gz"),
            (ACDC / "labelsTr" / f"{case_id}.nii.gz", destination / "labelsTr" / f"{case_id}.nii.gz"),
        ):
            image = nib.load(str(source))
            array = np.asanyarray(image.dataobj)
            cx, cy = array.shape[0] // 2, array.shape[1] // 2
            cropped = array[cx - crop // 2 : cx + crop // 2, cy - crop // 2 : cy + crop // 2]
            write_nifti(np.ascontiguousarray(cropped), image.affine, target)
    description = json.loads((ACDC / "dataset.json").read_text())
    description["numTraining"] = len(case_ids)
    (destination / "dataset.json").write_text(json.dumps(description))
    return destination


def planned_synthetic_dataset(root: Path) -> tuple[Path, Path]:
    """(raw dataset folder, plans folder) of six synthetic cases under ``root``, planned and preprocessed."""
    from masksam.data.pipeline import plan_and_preprocess

    raw = make_dataset(root / "Dataset001_Synthetic", num_cases=6)
    plans_dir = root / "plans"
    plan_and_preprocess(raw, plans_dir, preset="none", num_workers=0, num_folds=3, progress=False)
    return raw, plans_dir
