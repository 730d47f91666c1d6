"""The built-in phantom dataset: deterministic, anatomically ordered labels, valid nnU-Net layout, plannable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from masksam.data.io import read_dataset_json
from masksam.data.phantoms import PHANTOM_LABELS, generate_phantom_case, write_phantom_dataset
from masksam.data.pipeline import plan_and_preprocess
from masksam.data.validation import validate_dataset
from masksam.errors import DatasetError

SMALL = {"num_train": 3, "num_test": 1, "shape": (64, 64, 6), "seed": 3}


def _arrays(root: Path) -> dict[str, tuple[bytes, str, bytes]]:
    """File name -> (array bytes, dtype, affine bytes) of every NIfTI file under root."""
    result = {}
    for path in sorted(root.rglob("*.nii.gz")):
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
        result[str(path.relative_to(root))] = (array.tobytes(), str(array.dtype), image.affine.tobytes())
    return result


def test_same_seed_gives_identical_arrays_and_files(tmp_path):
    first = write_phantom_dataset(tmp_path / "a", **SMALL)
    second = write_phantom_dataset(tmp_path / "b", **SMALL)
    assert _arrays(first) == _arrays(second)
    assert len(_arrays(first)) == 8
    for path in sorted(first.rglob("*.nii.gz")):
        assert path.read_bytes() == (second / path.relative_to(first)).read_bytes()
    other = write_phantom_dataset(tmp_path / "c", **{**SMALL, "seed": 4})
    assert _arrays(other).keys() == _arrays(first).keys()
    assert all(_arrays(other)[k][0] != v[0] for k, v in _arrays(first).items())


def test_case_does_not_depend_on_the_number_of_cases(tmp_path):
    few = write_phantom_dataset(tmp_path / "few", **{**SMALL, "num_train": 2, "num_test": 0})
    many = _arrays(write_phantom_dataset(tmp_path / "many", **SMALL))
    assert _arrays(few)["imagesTr/phantom_001_0000.nii.gz"] == many["imagesTr/phantom_001_0000.nii.gz"]


@pytest.mark.parametrize("case", range(6), ids=lambda c: f"case{c}")
def test_labels_in_most_slices_and_blood_brighter_than_muscle(case):
    image, label = generate_phantom_case(np.random.default_rng([0, case]))
    assert image.shape == label.shape == (128, 128, 10)
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.min() >= 0
    assert set(np.unique(label).tolist()) == set(PHANTOM_LABELS.values())
    slices_with = {name: (label == value).any(axis=(0, 1)).mean() for name, value in PHANTOM_LABELS.items()}
    assert slices_with["MYO"] >= 0.9 and slices_with["LV"] >= 0.8 and slices_with["RV"] >= 0.6
    # Myocardium encloses the cavity in-plane: the LV's bounding box lies inside the MYO's on every LV slice.
    for z in np.flatnonzero((label == 3).any(axis=(0, 1))):
        lv, myo = np.argwhere(label[:, :, z] == 3), np.argwhere(label[:, :, z] == 2)
        assert (myo.min(axis=0) < lv.min(axis=0)).all() and (myo.max(axis=0) > lv.max(axis=0)).all()
    mean = {name: image[label == value].mean() for name, value in PHANTOM_LABELS.items()}
    assert mean["LV"] > 2 * mean["MYO"] and mean["RV"] > 2 * mean["MYO"]


def test_layout_dataset_json_and_affines(tmp_path):
    root = write_phantom_dataset(tmp_path / "Phantom", **{**SMALL, "num_train": 4})
    description = read_dataset_json(root)
    assert description.channel_names == {0: "MRI"} and description.labels == PHANTOM_LABELS
    assert description.num_training == 4 and description.file_ending == ".nii.gz"
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [f"phantom_{i:03d}.nii.gz" for i in range(4)]
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["phantom_004_0000.nii.gz"]
    assert [p.name for p in (root / "labelsTs").iterdir()] == ["phantom_004.nii.gz"]
    assert json.loads((root / "phantom.json").read_text())["seed"] == 3
    for index in range(5):
        subset = "Tr" if index < 4 else "Ts"
        affine = nib.load(str(root / f"labels{subset}" / f"phantom_{index:03d}.nii.gz")).affine
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (1.5, 1.5, 8.0), rtol=1e-6)
        off_diagonal = np.abs(affine[:3, :3] - np.diag(np.diag(affine[:3, :3]))).max()
        assert (off_diagonal > 0.01) == (index % 3 == 2)  # every third case is oblique
    assert [p.name for p in tmp_path.iterdir()] == ["Phantom"]  # no staging folder left


def test_default_dataset_is_fast_valid_and_plannable(tmp_path):
    started = time.perf_counter()
    root = write_phantom_dataset(tmp_path / "Dataset900_CardiacPhantom")
    elapsed = time.perf_counter() - started
    assert elapsed < 6.0  # about 0.7 s here; generous for a loaded machine
    assert validate_dataset(root).num_training == 12
    result = plan_and_preprocess(root, tmp_path / "plans", num_workers=0, progress=False)
    plans = result.plans
    assert result.written == 12
    assert plans.transpose == (2, 0, 1) and plans.anisotropic
    assert plans.patch_size == (8, 128, 128) and plans.num_classes == 4
    assert plans.target_spacing == pytest.approx((8.0, 1.5, 1.5), rel=1e-6)


def test_existing_folders_are_reused_or_refused(tmp_path):
    root = write_phantom_dataset(tmp_path / "ds", **SMALL)
    marker = root / "labelsTr" / "phantom_000.nii.gz"
    written = marker.stat().st_mtime_ns
    assert write_phantom_dataset(root, **SMALL) == root
    assert marker.stat().st_mtime_ns == written  # reused, not rewritten
    with pytest.raises(DatasetError, match="seed=4"):
        write_phantom_dataset(root, **{**SMALL, "seed": 4})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="choose another folder"):
        write_phantom_dataset(other, **SMALL)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_phantom_dataset(empty, **SMALL) / "dataset.json").is_file()


BAD_ARGUMENTS = {
    "no_training_case": {"num_train": 0},
    "negative_test_cases": {"num_test": -1},
    "two_axes": {"shape": (64, 64)},
    "zero_spacing": {"spacing": (1.5, 0.0, 8.0)},
}


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments(tmp_path, arguments):
    with pytest.raises(ValueError):
        write_phantom_dataset(tmp_path / "ds", **arguments)
    assert not (tmp_path / "ds").exists()
