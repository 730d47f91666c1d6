"""Overlay pictures: PNG size, class colours exactly where the labels are, slice choice, errors, atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from masksam.errors import ConfigError, DatasetError
from masksam.visualization.overlays import (
    CLASS_COLOURS,
    OVERLAY_ALPHA,
    default_slices,
    draw_overlays,
    intensity_window,
    overlay_figure,
)

NAMES = ["background", "LV", "MYO"]


def volume(shape=(40, 30, 10), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def two_boxes(shape=(40, 30, 10)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[5:20, 5:15, 3:6] = 1
    label[20:30, 10:25, 4:8] = 2
    return label


@pytest.mark.parametrize(
    ("shape", "spacing", "axis", "slices", "columns", "expected_hw"),
    [
        # 3 columns × 300 px; panel height 300 · (40·1)/(30·1) = 400 px per row, + 50 px legend band.
        pytest.param((40, 30, 10), (1, 1, 5), 2, [3, 4, 5], ("ref", "pred"), (1250, 900), id="axial-three-columns"),
        # Along axis 0: rows = axis 1 (30 × 1 mm), columns = axis 2 (10 × 5 mm): 300 · 30/50 = 180 px.
        pytest.param((40, 30, 10), (1, 1, 5), 0, [7], (), (230, 300), id="anisotropic-spacing-image-only"),
        # 100 × 10 voxels of 1 mm: ratio 10 is clipped to 3 (900 px per row).
        pytest.param((100, 10, 4), (1, 1, 1), 2, [0, 1], ("ref",), (1850, 600), id="ratio-clipped"),
    ],
)
def test_png_has_the_expected_pixel_size(tmp_path, shape, spacing, axis, slices, columns, expected_hw):
    image = volume(shape)
    label = np.zeros(shape, np.uint8)
    path = tmp_path / "overlay.png"
    drawn = draw_overlays(
        image,
        reference=label if "ref" in columns else None,
        prediction=label if "pred" in columns else None,
        slices=slices,
        axis=axis,
        class_names=NAMES,
        path=path,
        spacing=spacing,
    )
    assert drawn == slices
    assert imread(str(path)).shape == (*expected_hw, 4)


def png_of(figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    buffer.seek(0)
    return imread(buffer)[..., :3]  # (rows, columns, RGB) in [0, 1]


def sample_panel(png: np.ndarray, panel, rows: int, columns: int) -> np.ndarray:
    """PNG colour at the centre of every voxel of an (rows, columns) picture drawn in ``panel``."""
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    centres = np.stack([c.ravel(), r.ravel()], axis=1).astype(float)  # imshow data coordinates (x = column)
    display = panel.transData.transform(centres)  # pixels from the bottom-left corner
    x = np.floor(display[:, 0]).astype(int)
    y = png.shape[0] - 1 - np.floor(display[:, 1]).astype(int)
    return png[y, x].reshape(rows, columns, 3)


@pytest.mark.parametrize("axis", [pytest.param(2, id="axis-2"), pytest.param(1, id="axis-1")])
def test_class_colours_appear_exactly_where_the_label_is(axis):
    shape = (24, 18, 12)
    image, reference = volume(shape), two_boxes(shape)
    prediction = np.zeros(shape, np.uint8)
    prediction[2:6, 2:6, :] = 2
    index = 5
    figure = overlay_figure(
        image, reference=reference, prediction=prediction, slices=[index], axis=axis, class_names=NAMES
    )
    png = png_of(figure)
    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.clip((np.take(image, index, axis) - low) / (high - low), 0, 1)[..., None] * np.ones(3)
    panels = figure.axes
    for panel, labels in zip(panels, (None, reference, prediction), strict=True):
        expected = grey.copy()
        if labels is not None:
            label_slice = np.take(labels, index, axis)
            for value in (1, 2):
                colour = np.array(CLASS_COLOURS[value - 1])
                inside = label_slice == value
                expected[inside] = (1 - OVERLAY_ALPHA) * grey[inside] + OVERLAY_ALPHA * colour
        seen = sample_panel(png, panel, *expected.shape[:2])
        np.testing.assert_allclose(seen, expected, atol=1.5 / 255)


@pytest.mark.parametrize(
    ("foreground", "axis", "expected"),
    [
        pytest.param({2: 5, 7: 9, 4: 1, 8: 3}, 2, [2, 7, 8], id="top-three-in-index-order"),
        pytest.param({6: 4}, 2, [6], id="fewer-than-three-with-foreground"),
        pytest.param({}, 2, [5], id="empty-gives-middle"),
        pytest.param({3: 2, 1: 2, 5: 2, 8: 2}, 2, [1, 3, 5], id="ties-to-lower-index"),
        pytest.param({0: 1, 11: 4}, 0, [0, 11], id="other-axis"),
    ],
)
def test_default_slices_pick_most_foreground(foreground, axis, expected):
    shape = (12, 6, 10)
    label = np.zeros(shape, np.uint8)
    moved = np.moveaxis(label, axis, 0)  # a view: writing into it fills `label`
    for index, voxels in foreground.items():
        values = np.zeros(moved[index].size, np.uint8)
        values[:voxels] = 1 + index % 2  # any non-zero value counts
        moved[index] = values.reshape(moved[index].shape)
    assert default_slices(shape, axis, label) == expected


def test_default_slices_without_labels_give_the_middle():
    assert default_slices((4, 5, 9), 2, None) == [4]


def test_default_slices_used_when_none_given_prefer_the_reference(tmp_path):
    shape = (20, 20, 10)
    reference = np.zeros(shape, np.uint8)
    reference[..., 2] = 1
    prediction = np.zeros(shape, np.uint8)
    prediction[..., 7] = 1
    both = dict(axis=2, class_names=NAMES, path=tmp_path / "a.png")
    assert draw_overlays(volume(shape), reference=reference, prediction=prediction, **both) == [2]
    assert draw_overlays(volume(shape), prediction=prediction, **both) == [7]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        pytest.param({"reference": np.zeros((40, 30, 9))}, DatasetError, "reference has shape", id="reference-shape"),
        pytest.param({"prediction": np.zeros((30, 40, 10))}, DatasetError, "prediction has shape", id="pred-shape"),
        pytest.param({"slices": [3, 10]}, ConfigError, "slice(s) 10 outside 0..9 along axis 2", id="slice-high"),
        pytest.param({"slices": [-1]}, ConfigError, "slice(s) -1 outside", id="slice-negative"),
        pytest.param({"axis": 3}, ConfigError, "axis 3", id="bad-axis"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, kwargs, error, fragment):
    arguments = {"axis": 2, "class_names": NAMES, "path": tmp_path / "x.png", **kwargs}
    with pytest.raises(error) as raised:
        draw_overlays(volume(), **arguments)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "x.png").exists()


def test_writes_atomically_over_an_old_file(tmp_path: Path):
    path = tmp_path / "overlay.png"
    path.write_bytes(b"old")
    draw_overlays(volume(), reference=two_boxes(), axis=2, class_names=NAMES, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]  # no temporary left behind


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(np.arange(1001, dtype=float), (5.0, 995.0), id="percentiles"),
        pytest.param(np.full(10, 7.0), (6.5, 7.5), id="constant"),
        pytest.param(np.array([np.nan, 1.0, 1.0, 3.0]), (1.0, 2.98), id="nan-ignored"),  # 99.5th: 1 + 0.99 · 2
    ],
)
def test_intensity_window(values, expected):
    np.testing.assert_allclose(intensity_window(values), expected, atol=1e-9)
