"""Prompt pictures: box-to-rectangle geometry, slice mapping, windows, and the boxes drawn equal the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference.builders import planned_plans, save_tiny_checkpoint
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from masksam.data.io import read_volume
from masksam.data.preprocessing import preprocess_arrays
from masksam.errors import ConfigError, DatasetError
from masksam.inference.semantic import semantic_scores
from masksam.model.prompt_generator import mask_to_box
from masksam.training.checkpoint import load_trained_model
from masksam.visualization.overlays import overlay_figure
from masksam.visualization.prompts import (
    NO_OBJECT_COLOUR,
    PromptGrid,
    SlicePrompts,
    box_rectangles,
    draw_prompts,
    grid_slice_index,
    in_plane_centre,
    plan_windows,
    prompt_figure,
    prompt_legend_handles,
    query_label,
    run_prompts,
    window_start,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A tiny-backbone checkpoint_latest.pt on a planned synthetic dataset, and one case of it."""
    root = tmp_path_factory.mktemp("prompts")
    plans = planned_plans(root / "dataset")
    path = save_tiny_checkpoint(root / "model", plans, name="latest", seed=3)
    dataset = root / "dataset" / "Dataset001_Synthetic"
    image = read_volume(dataset / "imagesTr" / "case_000_0000.nii.gz")
    label = read_volume(dataset / "labelsTr" / "case_000.nii.gz", is_label=True)
    return load_trained_model(path), image, label.array.astype(np.int64)


@pytest.mark.parametrize(
    ("box", "height", "width", "expected"),
    [
        pytest.param((0, 0, 1, 1), 4, 8, (-0.5, -0.5, 8, 4), id="full-slice"),
        # One pixel at row 1, column 2 (centre (x=2, y=1)): box (2/8, 1/4, 3/8, 2/4).
        pytest.param((2 / 8, 1 / 4, 3 / 8, 2 / 4), 4, 8, (1.5, 0.5, 1, 1), id="single-pixel"),
        pytest.param((0.5, 0.25, 0.75, 1.0), 8, 4, (1.5, 1.5, 1, 6), id="portrait"),
    ],
)
def test_box_rectangles_by_hand(box, height, width, expected):
    np.testing.assert_allclose(box_rectangles(np.array([box]), height=height, width=width)[0], expected)


def test_box_rectangles_enclose_exactly_the_mask_pixels():
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(5, 12, 20)
    for index in range(5):
        r0, c0 = torch.randint(0, 8, (2,), generator=generator).tolist()
        masks[index, r0 : r0 + 1 + index, c0 : c0 + 2 + 2 * index] = 1.0
    boxes, _ = mask_to_box(masks - 0.5)  # (5, 4) normalised xyxy
    rectangles = box_rectangles(boxes.numpy(), height=12, width=20)
    for mask, (left, top, box_width, box_height) in zip(masks.numpy(), rectangles, strict=True):
        rows, columns = np.nonzero(mask)
        # Pixel centres are integers: the outline runs half a pixel outside the outermost centres.
        np.testing.assert_allclose([left, top], [columns.min() - 0.5, rows.min() - 0.5], atol=1e-5)
        np.testing.assert_allclose(
            [left + box_width, top + box_height], [columns.max() + 0.5, rows.max() + 0.5], atol=1e-5
        )


@pytest.mark.parametrize(
    ("crop", "sizes", "file_index", "expected"),
    [
        pytest.param((0, 10), (10, 10), 7, 7, id="identity"),
        pytest.param((2, 8), (6, 6), 5, 3, id="cropped"),
        # 6 slices resampled to 12: file slice 3 (centre 3.5 of the crop) -> 3.5·2 - 0.5 = 6.5 -> 6 (round half even).
        pytest.param((0, 6), (6, 12), 3, 6, id="upsampled"),
        pytest.param((0, 12), (12, 6), 5, 2, id="downsampled"),  # (5.5)/2 - 0.5 = 2.25
        pytest.param((4, 8), (4, 4), 0, 0, id="before-crop-clamped"),
        pytest.param((4, 8), (4, 4), 11, 3, id="after-crop-clamped"),
    ],
)
def test_grid_slice_index(crop, sizes, file_index, expected):
    properties = {
        "crop_box": [list(crop), [0, 5], [0, 5]],
        "shape_after_crop": [sizes[0], 5, 5],
        "shape_after_resampling": [sizes[1], 5, 5],
    }
    assert grid_slice_index(file_index, properties) == expected


@pytest.mark.parametrize(
    ("slices", "size", "patch", "expected"),
    [
        pytest.param([5], 10, 4, [(3, [5])], id="centred"),  # floor(5 - 1.5): slices 3..6
        pytest.param([3, 4, 5], 10, 4, [(2, [3, 4, 5])], id="one-window-centred-on-the-group"),
        pytest.param([3, 7], 10, 4, [(1, [3]), (5, [7])], id="too-far-apart"),
        pytest.param([0, 9], 10, 4, [(0, [0]), (6, [9])], id="clamped-at-both-ends"),
        pytest.param([5, 2, 2], 10, 2, [(1, [2]), (4, [5])], id="sorted-deduplicated"),
        pytest.param([1], 4, 4, [(0, [1])], id="patch-equals-volume"),
    ],
)
def test_plan_windows(slices, size, patch, expected):
    windows = plan_windows(slices, size=size, patch=patch)
    assert windows == expected
    for start, members in windows:
        assert 0 <= start <= size - patch and all(start <= m < start + patch for m in members)


@pytest.mark.parametrize(
    ("centre", "size", "patch", "expected"),
    [
        pytest.param(50.0, 100, 20, 40, id="middle"),  # 40..59 around 49.5..50
        pytest.param(49.5, 100, 20, 40, id="half-voxel"),
        pytest.param(3.0, 100, 20, 0, id="clamped-low"),
        pytest.param(97.0, 100, 20, 80, id="clamped-high"),
        pytest.param(7.0, 20, 20, 0, id="patch-fills-axis"),
    ],
)
def test_window_start(centre, size, patch, expected):
    assert window_start(centre, size, patch) == expected


@pytest.mark.parametrize(
    ("foreground", "expected"),
    [
        pytest.param(None, (4.5, 7.0), id="no-reference-grid-centre"),
        pytest.param([(1, 2, 3), (1, 4, 5)], (3.0, 4.0), id="centroid-on-chosen-slices"),
        pytest.param([(0, 9, 14)], (4.5, 7.0), id="foreground-elsewhere-ignored"),
    ],
)
def test_in_plane_centre(foreground, expected):
    reference = None
    if foreground is not None:
        reference = np.zeros((3, 10, 15), np.uint8)
        for t, h, w in foreground:
            reference[t, h, w] = 1
    grid = PromptGrid(image=np.zeros((1, 3, 10, 15), np.float32), reference=reference, properties={}, offset=(0, 0, 0))
    assert in_plane_centre(grid, [1, 2]) == expected


def model_patch(trained, image, label, window) -> torch.Tensor:
    """The model input at ``window`` built independently: preprocessing, centred zero padding, crop."""
    preprocessed, _, _ = preprocess_arrays(image.array[None], label, image.geometry, trained.plans)
    patch = trained.model.config.patch_size
    pads = [(0, 0)] + [
        ((p - s) // 2, p - s - (p - s) // 2) if s < p else (0, 0)
        for s, p in zip(preprocessed.shape[1:], patch, strict=True)
    ]
    padded = np.pad(preprocessed, pads)
    t, h, w = window
    return torch.from_numpy(padded[:, t : t + patch[0], h : h + patch[1], w : w + patch[2]].copy())[None]


def test_prompts_are_the_model_outputs_on_its_window(case):
    trained, image, label = case
    prompts = run_prompts(trained, image.array[None], image.geometry, slices=[6, 2, 3], reference=label)
    assert [p.file_slice for p in prompts] == [2, 3, 6]
    patch_t = trained.model.config.patch_size[0]
    for record in prompts:
        patch = model_patch(trained, image, label, record.window)
        with torch.inference_mode():
            output = trained.model(patch)
        t = record.grid_slice - record.window[0]
        assert 0 <= t < patch_t
        np.testing.assert_array_equal(record.image, patch[0, 0, t].numpy())
        np.testing.assert_array_equal(record.boxes, output.prompt_boxes[t].numpy())
        probabilities = output.class_logits[t].softmax(-1)  # (N, K+1)
        np.testing.assert_array_equal(record.classes, probabilities.argmax(-1).numpy())
        np.testing.assert_allclose(record.probabilities, probabilities.max(-1).values.numpy(), rtol=1e-6)
        semantic = semantic_scores(output.class_logits, output.mask_logits)[t].argmax(0)  # (H, W)
        np.testing.assert_array_equal(record.semantic, semantic.numpy())
        assert record.reference is not None and record.reference.shape == record.image.shape


def test_drawn_rectangles_equal_the_model_prompt_boxes(case, tmp_path):
    trained, image, label = case
    path = tmp_path / "prompts.png"
    prompts = draw_prompts(trained, image.array[None], image.geometry, slices=[3, 4], path=path, reference=label)
    assert imread(str(path)).shape[2] == 4
    figure = prompt_figure(prompts, class_names=["background", "class1", "class2"])
    box_panels = figure.axes[::3]  # image + boxes | semantic map | ground truth
    for panel, record in zip(box_panels, prompts, strict=True):
        drawn = [p for p in panel.patches if isinstance(p, Rectangle)]
        got = np.array([[p.get_x(), p.get_y(), p.get_width(), p.get_height()] for p in drawn])
        height, width = record.image.shape
        np.testing.assert_allclose(got, box_rectangles(record.boxes, height=height, width=width), rtol=1e-6)
        assert [p.get_gid() for p in drawn] == [f"q{q}" for q in range(len(record.boxes))]


def handmade(classes: list[int]) -> SlicePrompts:
    queries = len(classes)
    return SlicePrompts(
        file_slice=0,
        grid_slice=0,
        window=(0, 0, 0),
        image=np.arange(64, dtype=np.float32).reshape(8, 8),
        boxes=np.tile([0.1, 0.2, 0.6, 0.9], (queries, 1)),
        classes=np.array(classes),
        probabilities=np.full(queries, 0.5),
        semantic=np.zeros((8, 8), np.int64),
        reference=None,
    )


@pytest.mark.parametrize(
    ("show_no_object", "expected"),
    [
        pytest.param(True, [("q0", "-"), ("q1", "--"), ("q2", "-"), ("q3", "--")], id="dashed"),
        pytest.param(False, [("q0", "-"), ("q2", "-")], id="skipped"),
    ],
)
def test_no_object_queries_dashed_grey_or_skipped(show_no_object, expected):
    figure = prompt_figure([handmade([1, 3, 0, 3])], class_names=["bg", "LV", "MYO"], show_no_object=show_no_object)
    drawn = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert [(p.get_gid(), "--" if p.get_linestyle() == "--" else "-") for p in drawn] == expected
    for patch in drawn:
        if patch.get_gid() in ("q1", "q3"):
            np.testing.assert_allclose(patch.get_edgecolor()[:3], NO_OBJECT_COLOUR)
    assert len(figure.axes) == 2  # no reference: boxes | semantic map


@pytest.mark.parametrize(
    ("class_id", "expected"),
    [pytest.param(1, "q3: LV 0.93", id="class"), pytest.param(3, "q3: no object 0.93", id="no-object")],
)
def test_query_label(class_id, expected):
    assert query_label(3, class_id, 0.934, ["background", "LV", "MYO"]) == expected


@pytest.mark.parametrize(
    ("channels", "slices", "error", "fragment"),
    [
        pytest.param(2, [3], DatasetError, "C = 1 channel(s)", id="channels"),
        pytest.param(1, [8], ConfigError, "slice(s) 8 outside 0..7 along axis 2", id="slice"),
    ],
)
def test_bad_inputs_give_one_line_errors(case, tmp_path, channels, slices, error, fragment):
    trained, image, _ = case
    with pytest.raises(error) as raised:
        draw_prompts(
            trained, np.stack([image.array] * channels), image.geometry, slices=slices, path=tmp_path / "p.png"
        )
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "p.png").exists()


def labelled_record(classes: list[int], *, semantic_value: int = 0, reference_value: int | None = 2) -> SlicePrompts:
    """One slice whose boxes all sit on the same spot (their labels would cover each other there)."""
    record = handmade(classes)
    record.semantic = np.full((8, 8), semantic_value, np.int64)
    if reference_value is not None:
        record.reference = np.zeros((8, 8), np.int64)
        record.reference[2:6, 2:6] = reference_value
    return record


def test_columns_follow_the_overlay_picture_order():
    figure = prompt_figure([labelled_record([1, 2])], class_names=["bg", "LV", "MYO"])
    titles = [panel.get_title() for panel in figure.axes]
    assert titles[0].endswith("prompt boxes")
    assert titles[1:] == ["ground truth", "prediction (semantic map)"]
    reference = np.zeros((8, 8, 3), np.int64)
    overlay = overlay_figure(
        np.zeros((8, 8, 3)),
        reference=reference,
        prediction=reference,
        slices=[1],
        axis=2,
        class_names=["bg", "LV", "MYO"],
    )
    overlay_titles = [panel.get_title().removeprefix("slice 1: ") for panel in overlay.axes]
    assert overlay_titles == ["image", "ground truth", "prediction"]  # case.png: the same order


@pytest.mark.parametrize("show_no_object", [True, False])
def test_legend_keys_have_the_colours_of_the_boxes(show_no_object):
    names = ["bg", "LV", "MYO"]
    figure = prompt_figure([labelled_record([1, 3, 0, 2])], class_names=names, show_no_object=show_no_object)
    (legend,) = figure.legends
    keys = {text.get_text(): handle for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    boxes = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert len(boxes) == (4 if show_no_object else 3)
    for box in boxes:
        class_id = [1, 3, 0, 2][int(box.get_gid()[1:])]
        name = {0: "box: bg", 3: "box: no object"}.get(class_id, names[class_id] if class_id < 3 else "")
        key = keys[name]
        np.testing.assert_allclose(key.get_edgecolor()[:3], box.get_edgecolor()[:3])
        fill = key.get_facecolor()
        assert fill[3] == 0 or np.allclose(fill[:3], box.get_edgecolor()[:3]), f"{name}: fill {fill}"
    # The legend's own artists do not report a dashed style (they copy the dash pattern only): ask the keys.
    styles = {h.get_label(): h.get_linestyle() for h in prompt_legend_handles([1, 2], names, show_no_object)}
    assert styles == {"LV": "-", "MYO": "-", "box: bg": "-"} | ({"box: no object": "--"} if show_no_object else {})


@pytest.mark.parametrize(
    ("semantic_value", "reference_value", "expected"),
    [
        pytest.param(0, 2, [False, False, True], id="empty-prediction"),
        pytest.param(1, 0, [False, True, False], id="empty-reference"),
        pytest.param(1, 2, [False, False, False], id="both-with-foreground"),
        pytest.param(0, None, [False, True], id="no-reference-empty-prediction"),
    ],
)
def test_empty_label_panels_say_empty(semantic_value, reference_value, expected):
    record = labelled_record([1], semantic_value=semantic_value, reference_value=reference_value)
    figure = prompt_figure([record], class_names=["bg", "LV", "MYO"])
    marked = [any(t.get_gid() == "empty" and t.get_text() == "empty" for t in panel.texts) for panel in figure.axes]
    assert marked == expected


@pytest.mark.parametrize("queries", [2, 4, 8])
def test_box_labels_do_not_cover_each_other(queries):
    record = handmade(([1, 2, 3, 0] * 2)[:queries])
    record.image = np.zeros((64, 64), np.float32)
    record.semantic = np.zeros((64, 64), np.int64)
    record.boxes = np.tile([0.3, 0.3, 0.6, 0.6], (queries, 1))  # every box on the same spot
    figure = prompt_figure([record], class_names=["bg", "LV", "MYO"])
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    panel = figure.axes[0]
    labels = [t for t in panel.texts if (t.get_gid() or "").startswith("label q")]
    assert len(labels) == queries
    extents = [t.get_window_extent(renderer) for t in labels]
    frame = panel.get_window_extent(renderer)
    for index, extent in enumerate(extents):
        assert frame.x0 - 0.5 <= extent.x0 and extent.x1 <= frame.x1 + 0.5
        assert frame.y0 - 0.5 <= extent.y0 and extent.y1 <= frame.y1 + 0.5
        for other in extents[index + 1 :]:
            assert not extent.overlaps(other), f"{extent} and {other} overlap"
