"""Reading dataset.json, listing cases and reading/writing NIfTI volumes with their geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dataset_builders import oblique_affine, write_nifti

from masksam.data.io import (
    Geometry,
    list_cases,
    read_dataset_json,
    read_volume,
    split_channel_name,
    write_volume,
)
from masksam.errors import DatasetError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case_001_0000.nii.gz", ("case_001", 0)),
        ("patient001_frame01_0003.nii.gz", ("patient001_frame01", 3)),
        ("case_001.nii.gz", None),
        ("case_001_0000.nii", None),
    ],
)
def test_split_channel_name(name, expected):
    assert split_channel_name(name, ".nii.gz") == expected


def test_list_cases_expects_every_channel(dataset):
    description = read_dataset_json(dataset)
    cases = list_cases(dataset, description)
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert cases[0].images == (dataset / "imagesTr" / "case_000_0000.nii.gz",)
    assert cases[0].label == dataset / "labelsTr" / "case_000.nii.gz"


def test_read_volume_keeps_oblique_geometry(tmp_path):
    affine = oblique_affine((1.5, 1.2, 6.0))
    array = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    write_nifti(array, affine, tmp_path / "a.nii.gz")
    volume = read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)
    np.testing.assert_allclose(volume.geometry.spacing, (1.5, 1.2, 6.0), rtol=1e-5)
    assert volume.geometry.orientation == tuple(nib.aff2axcodes(affine))
    again = Geometry.from_json(volume.geometry.to_json())
    np.testing.assert_array_equal(again.affine, volume.geometry.affine)
    assert again.shape == (4, 5, 3)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((4, 5, 3, 1), (4, 5, 3)), ((4, 5), (4, 5, 1))],
    ids=["4d-singleton", "2d"],
)
def test_read_volume_makes_3d(tmp_path, shape, expected):
    write_nifti(np.zeros(shape, np.float32), np.eye(4), tmp_path / "a.nii.gz")
    assert read_volume(tmp_path / "a.nii.gz").array.shape == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), (b"", "file is empty"), (b"garbage" * 50, "unreadable NIfTI"), ("4d", "expected a 3D")],
)
def test_read_volume_errors_name_case_and_file(tmp_path, content, message):
    path = tmp_path / "x_0000.nii.gz"
    if content == "4d":
        write_nifti(np.zeros((3, 3, 3, 2), np.float32), np.eye(4), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as caught:
        read_volume(path, case_id="x")
    assert "case x" in str(caught.value) and str(path) in str(caught.value)


def test_write_volume_is_atomic_and_keeps_affine(tmp_path):
    affine = oblique_affine()
    label = np.random.default_rng(0).integers(0, 4, (6, 7, 5)).astype(np.uint8)
    write_volume(label, affine, tmp_path / "out" / "p.nii.gz")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p.nii.gz"]  # no temporary left behind
    back = read_volume(tmp_path / "out" / "p.nii.gz", is_label=True)
    np.testing.assert_array_equal(back.array, label)
    np.testing.assert_allclose(back.geometry.affine, affine, atol=1e-5)
