"""Export: the input's header and affine exactly, label dtype, atomic writes, inputs never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from masksam.errors import MaskSamError
from masksam.inference.export import (
    label_dtype,
    probabilities_path,
    write_label_map,
    write_probabilities,
)

# Header fields a label map may change; everything else must equal the input's.
LABEL_FIELDS = {"datatype", "bitpix", "scl_slope", "scl_inter", "cal_min", "cal_max"}


def header_differences(a: nib.Nifti1Header, b: nib.Nifti1Header) -> list[str]:
    """Header fields that differ, apart from those a label map must change."""

    def same(x: np.ndarray, y: np.ndarray) -> bool:
        floating = np.issubdtype(x.dtype, np.floating)
        return bool(np.array_equal(x, y, equal_nan=floating))

    return [key for key in a.keys() if key not in LABEL_FIELDS and not same(a[key], b[key])]


def ct_input(path: Path, affine: np.ndarray, *, qform_code: int = 1, sform_code: int = 2) -> Path:
    """An int16 CT-like file with scaling (slope 1, intercept -1024) and distinct qform/sform codes."""
    data = np.random.default_rng(0).integers(0, 2000, size=(12, 10, 5)).astype(np.int16)
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(1.0, -1024.0)
    image.header.set_qform(affine, code=qform_code)
    image.header.set_sform(affine, code=sform_code)
    image.header["descrip"] = b"scanner export"
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    return path


def oblique(flip: bool) -> np.ndarray:
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.7 if flip else 0.7, 0.9, 3.0])
    affine[:3, 3] = [12.5, -40.0, 7.25]
    return affine


@pytest.mark.parametrize(
    ("affine", "max_label", "dtype"),
    [
        pytest.param(oblique(False), 3, np.uint8, id="oblique-uint8"),
        pytest.param(oblique(True), 3, np.uint8, id="flipped-oblique"),
        pytest.param(np.diag([-1.0, -1.0, 2.0, 1.0])[:, [1, 0, 2, 3]], 300, np.int16, id="permuted-int16"),
    ],
)
def test_label_map_keeps_the_input_header(tmp_path: Path, affine, max_label: int, dtype) -> None:
    source = ct_input(tmp_path / "case_0000.nii.gz", affine)
    labels = np.random.default_rng(1).integers(0, max_label + 1, size=(12, 10, 5))
    written = write_label_map(labels, source, tmp_path / "out" / "case.nii.gz")
    result, reference = nib.load(str(written)), nib.load(str(source))
    assert result.get_data_dtype() == dtype
    np.testing.assert_array_equal(np.asanyarray(result.dataobj), labels)  # no scaling inherited from the CT
    np.testing.assert_array_equal(result.affine, reference.affine)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(reference.affine)
    assert result.shape == reference.shape
    assert header_differences(reference.header, result.header) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["case.nii.gz"]  # no temporary file left


def test_a_4d_singleton_input_gets_a_3d_label_map(tmp_path: Path) -> None:
    source = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4, 1), np.float32), oblique(False)), str(source))
    written = write_label_map(np.ones((6, 5, 4), np.uint8), source, tmp_path / "case.nii.gz")
    assert nib.load(str(written)).shape == (6, 5, 4)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    source = ct_input(tmp_path / "case_0000.nii.gz", oblique(False))
    with pytest.raises(MaskSamError, match="does not fit"):
        write_label_map(np.zeros((5, 10, 12), np.uint8), source, tmp_path / "case.nii.gz")


@pytest.mark.parametrize("how", ["same-path", "hard-link", "symlink-folder"])
def test_an_input_is_never_overwritten(tmp_path: Path, how: str) -> None:
    (tmp_path / "in").mkdir()
    source = ct_input(tmp_path / "in" / "case_0000.nii.gz", oblique(False))
    before = source.read_bytes()
    if how == "same-path":
        target = source
    elif how == "hard-link":
        target = tmp_path / "link.nii.gz"
        os.link(source, target)
    else:
        (tmp_path / "alias").symlink_to(tmp_path / "in")
        target = tmp_path / "alias" / "case_0000.nii.gz"
    with pytest.raises(MaskSamError, match="would overwrite the input file"):
        write_label_map(np.zeros((12, 10, 5), np.uint8), source, target)
    assert source.read_bytes() == before


def test_probabilities_npz_in_nnunets_axis_order(tmp_path: Path) -> None:
    scores = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)  # (K, X, Y, Z), file order
    path = probabilities_path(tmp_path / "case.1.nii.gz")
    assert path.name == "case.1.npz"
    write_probabilities(scores, path, class_names=["background", "a", "b"])
    with np.load(path) as stored:
        assert stored["probabilities"].dtype == np.float16
        assert stored["probabilities"].shape == (3, 6, 5, 4)  # (K, z, y, x) as nnU-Net's readers give the array
        np.testing.assert_allclose(stored["probabilities"], scores.transpose(0, 3, 2, 1), atol=1e-3)
        assert stored["class_names"].tolist() == ["background", "a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.1.npz"]


def test_probabilities_are_streamed_class_by_class(tmp_path: Path) -> None:
    maps = [np.full((4, 5, 6), value, np.float32) for value in (0.25, 0.5, 1.0)]
    transposed = [m.transpose(2, 0, 1).copy().transpose(1, 2, 0) for m in maps]  # same values, other strides
    write_probabilities(iter(transposed), tmp_path / "case.npz", class_names=["a", "b", "c"])
    with np.load(tmp_path / "case.npz") as stored:
        np.testing.assert_array_equal(stored["probabilities"], np.stack(maps).transpose(0, 3, 2, 1))
    with pytest.raises(ValueError, match="2 class maps for 3 class names"):
        write_probabilities(iter(maps[:2]), tmp_path / "short.npz", class_names=["a", "b", "c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]  # the failed write left nothing


@pytest.mark.parametrize(
    ("value", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.int16), (32767, np.int16)], ids=str
)
def test_label_dtype(value: int, dtype) -> None:
    assert label_dtype(value) == dtype
