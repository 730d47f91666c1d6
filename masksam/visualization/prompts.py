"""The box prompts a trained model generates for itself (paper Fig. 1), drawn over the slices it saw.

For one case given in file order (C, X, Y, Z)::

    preprocess exactly as training (``preprocess_arrays``)  ->  zero-pad to at least the patch, centred
      (as the sliding window does)  ->  one T×H×W window per group of chosen slices: along T centred on the
      slice, in-plane centred on the reference's foreground (else on the grid centre)  ->  MaskSAM forward
      ->  per slice: every query's ``prompt_boxes`` (the boxes SAM's prompt encoder received), its class
      (argmax of softmax over K+1) and probability, and the semantic map (MaskFormer inference)

Pictures are in the model's grid (preprocessed, padded; rows H, columns W), so a box is drawn exactly where
the model put it. Box convention (pixel edges, as ``mask_to_box``): x1 = first column / W, x2 = (last
column + 1) / W, the same for y; in image coordinates (pixel centres at integers) the rectangle spans
``x1·W - 0.5 .. x2·W - 0.5`` (:func:`box_rectangles`).

With a reference label the crop to the non-zero box includes it, as in training; it differs from inference
only where the label is non-zero outside the image's non-zero region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masksam.data.io import Geometry
from masksam.data.preprocessing import preprocess_arrays
from masksam.errors import DatasetError
from masksam.inference.semantic import semantic_scores
from masksam.inference.sliding_window import padding_for
from masksam.training.checkpoint import TrainedModel
from masksam.visualization.label_placement import place_labels
from masksam.visualization.overlays import (
    OVERLAY_ALPHA,
    add_legend,
    blend_labels,
    check_slices,
    class_colour,
    class_name,
    figure_inches,
    intensity_window,
    new_figure,
    panel_ratio,
    save_figure,
    to_grey,
)

BACKGROUND_BOX_COLOUR = (1.0, 1.0, 1.0)  # queries of class 0 (background is a segment by default)
NO_OBJECT_COLOUR = (0.6, 0.6, 0.6)  # dashed


@dataclass
class PromptGrid:
    """A case preprocessed for the model and padded to at least its patch.

    Attributes:
        image: (C, T, H, W) float32 preprocessed, zero-padded image.
        reference: (T, H, W) label class ids on the same grid, or None.
        properties: ``preprocess_arrays``' record of the steps (crop box, shapes, spacing).
        offset: (t, h, w) position of the unpadded grid's origin in the padded one.
    """

    image: np.ndarray
    reference: np.ndarray | None
    properties: dict
    offset: tuple[int, int, int]


@dataclass
class SlicePrompts:
    """What the model proposed on one slice.

    Attributes:
        file_slice: Index along the model's slice axis in the file.
        grid_slice: Index along T in the padded grid (the slice drawn).
        window: (t, h, w) start of the model's window in the padded grid.
        image: (H, W) first input channel of the window on this slice.
        boxes: (N, 4) normalised xyxy prompt boxes (``MaskSamOutput.prompt_boxes``).
        classes: (N,) predicted class per query, argmax of softmax over K+1 (K = no object).
        probabilities: (N,) softmax probability of that class.
        semantic: (H, W) class ids of the semantic map.
        reference: (H, W) reference class ids in the window, or None.
    """

    file_slice: int
    grid_slice: int
    window: tuple[int, int, int]
    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    semantic: np.ndarray
    reference: np.ndarray | None


def box_rectangles(boxes: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Normalised xyxy boxes -> rectangles in image coordinates of an (H, W) picture (pixel centres at integers).

    Args:
        boxes: (N, 4) normalised (x1, y1, x2, y2), pixel-edge convention (see module docstring).
        height: H, rows of the picture.
        width: W, columns of the picture.

    Returns:
        (N, 4) (left, top, width, height) for ``matplotlib.patches.Rectangle`` on an ``imshow`` of the picture.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = np.array([width, height, width, height], dtype=np.float64)
    corners = boxes * scale - 0.5  # (N, 4) pixel-edge positions in image coordinates
    return np.stack(
        [corners[:, 0], corners[:, 1], corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]], axis=-1
    )


def grid_slice_index(file_index: int, properties: dict) -> int:
    """The preprocessed (unpadded) slice nearest to file slice ``file_index`` along the model's slice axis.

    Preprocessing crops T to ``[start, stop)`` and resamples those L slices to L' with voxel centres aligned
    (``align_corners=False``): file slice z sits at ``(z - start + 0.5) · L' / L - 0.5``. Slices outside the
    crop box (all zero) map to the nearest border slice.
    """
    start, _ = properties["crop_box"][0]
    cropped, resampled = properties["shape_after_crop"][0], properties["shape_after_resampling"][0]
    position = (file_index - start + 0.5) * resampled / cropped - 0.5
    return int(np.clip(np.rint(position), 0, resampled - 1))


def prepare_grid(
    trained: TrainedModel, image: np.ndarray, geometry: Geometry, *, reference: np.ndarray | None = None
) -> PromptGrid:
    """Preprocesses a case like training and pads it (centred, zeros) to at least the model's patch.

    Args:
        trained: The model and its plans.
        image: (C, X, Y, Z) channels in file order.
        geometry: The files' geometry.
        reference: (X, Y, Z) integer label values, or None.

    Returns:
        The padded grid.

    Raises:
        DatasetError: The image does not have the model's channel count.
    """
    plans = trained.plans
    if image.ndim != 4 or image.shape[0] != plans.num_channels:
        raise DatasetError(
            f"image of shape {image.shape} does not fit the model: it needs (C, X, Y, Z) with C = "
            f"{plans.num_channels} channel(s) ({', '.join(plans.channel_names.values())})"
        )
    label = None if reference is None else np.asarray(reference, dtype=np.int64)  # label values 0..K-1 = class ids
    preprocessed, label_grid, properties = preprocess_arrays(image, label, geometry, plans)
    pads = padding_for(preprocessed.shape[1:], tuple(trained.model.config.patch_size))
    padded = np.pad(preprocessed, [(0, 0), *pads])  # (C, T', H', W')
    padded_label = None if label_grid is None else np.pad(label_grid, pads)  # (T', H', W')
    return PromptGrid(padded, padded_label, properties, tuple(before for before, _ in pads))


def window_start(centre: float, size: int, patch: int) -> int:
    """Start of a ``patch``-long window centred on ``centre`` (a voxel index) and kept inside ``0 .. size``."""
    return int(np.clip(np.floor(centre - (patch - 1) / 2), 0, size - patch))


def plan_windows(grid_slices: Sequence[int], *, size: int, patch: int) -> list[tuple[int, list[int]]]:
    """Groups slices into as few windows along T as a greedy pass finds, each centred on its group.

    A group starts at the first slice not yet served and takes every later slice less than ``patch`` away.

    Args:
        grid_slices: Slice indices in the padded grid.
        size: T' of the padded grid (at least ``patch``).
        patch: T of the model's patch.

    Returns:
        (window start, slices it serves) in slice order; every slice lies in ``start .. start + patch - 1``.
    """
    groups: list[list[int]] = []
    for index in sorted(set(grid_slices)):
        if groups and index < groups[-1][0] + patch:
            groups[-1].append(index)
        else:
            groups.append([index])
    return [(window_start((group[0] + group[-1]) / 2, size, patch), group) for group in groups]


def in_plane_centre(grid: PromptGrid, grid_slices: Sequence[int]) -> tuple[float, float]:
    """(h, w) centre of the windows: the reference foreground's centroid on the chosen slices, else the grid's."""
    if grid.reference is not None:
        rows, columns = np.nonzero(grid.reference[list(grid_slices)] > 0)[1:]
        if rows.size:
            return float(rows.mean()), float(columns.mean())
    return (grid.image.shape[2] - 1) / 2, (grid.image.shape[3] - 1) / 2


def run_prompts(
    trained: TrainedModel,
    image: np.ndarray,
    geometry: Geometry,
    *,
    slices: Sequence[int],
    reference: np.ndarray | None = None,
) -> list[SlicePrompts]:
    """Runs the model on windows around the chosen slices and collects its prompts and predictions.

    Args:
        trained: The model (on any device) and its plans.
        image: (C, X, Y, Z) channels in file order.
        geometry: The files' geometry.
        slices: File indices along the model's slice axis (``plans.transpose[0]``).
        reference: (X, Y, Z) integer label values, or None.

    Returns:
        One record per distinct grid slice, in slice order (two file slices may share a grid slice).

    Raises:
        DatasetError: Wrong channel count.
        ConfigError: A slice outside the volume.
    """
    model, config = trained.model, trained.model.config
    axis = trained.plans.transpose[0]
    slices = check_slices(slices, image.shape[1:], axis)
    grid = prepare_grid(trained, image, geometry, reference=reference)
    file_of = {grid_slice_index(s, grid.properties) + grid.offset[0]: s for s in reversed(slices)}
    patch_t, patch_h, patch_w = config.patch_size
    _, size_t, size_h, size_w = grid.image.shape
    centre_h, centre_w = in_plane_centre(grid, list(file_of))
    start_h, start_w = window_start(centre_h, size_h, patch_h), window_start(centre_w, size_w, patch_w)
    device = next(model.parameters()).device
    records = []
    for start_t, members in plan_windows(list(file_of), size=size_t, patch=patch_t):
        window = (
            slice(start_t, start_t + patch_t),
            slice(start_h, start_h + patch_h),
            slice(start_w, start_w + patch_w),
        )
        patch = torch.from_numpy(np.ascontiguousarray(grid.image[(slice(None), *window)]))[None]  # (1, C, T, H, W)
        with torch.inference_mode():
            output = model(patch.to(device))
            probabilities, classes = output.class_logits.float().softmax(dim=-1).max(dim=-1)  # (T, N) each
            semantic = semantic_scores(
                output.class_logits, output.mask_logits, include_background=config.include_background
            ).argmax(dim=1)  # (T, H, W)
        for index in members:
            t = index - start_t
            records.append(
                SlicePrompts(
                    file_slice=file_of[index],
                    grid_slice=index,
                    window=(start_t, start_h, start_w),
                    image=patch[0, 0, t].numpy(),
                    boxes=output.prompt_boxes[t].float().cpu().numpy(),
                    classes=classes[t].cpu().numpy(),
                    probabilities=probabilities[t].cpu().numpy(),
                    semantic=semantic[t].cpu().numpy(),
                    reference=None if grid.reference is None else grid.reference[(index, *window[1:])],
                )
            )
    return records


def query_label(query: int, class_id: int, probability: float, class_names: Sequence[str]) -> str:
    """``"q3: LV 0.93"``; class id K (= ``len(class_names)``) is ``"no object"``."""
    name = class_names[class_id] if class_id < len(class_names) else "no object"
    return f"q{query}: {name} {probability:.2f}"


def box_colour(class_id: int, num_classes: int) -> tuple[float, float, float]:
    """Class colour of a query's box: background white, no object grey, others their overlay colour."""
    if class_id >= num_classes:
        return NO_OBJECT_COLOUR
    return BACKGROUND_BOX_COLOUR if class_id == 0 else class_colour(class_id)


def prompt_figure(
    prompts: Sequence[SlicePrompts],
    *,
    class_names: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0),
    show_no_object: bool = True,
):
    """Builds the prompt figure: per slice, image + prompt boxes | reference (if any) | semantic map.

    The columns follow ``case.png``'s order (ground truth before prediction). A label panel without
    foreground says "empty". Box labels, on their box's colour, are moved beside their boxes until none
    covers another (:mod:`masksam.visualization.label_placement`). Each legend key is drawn in its box's colour: the
    outline is the box's, the fill the overlay's tint of that class (none for background and no object).

    Args:
        prompts: From :func:`run_prompts`.
        class_names: K names in class-id order (class id k, not label value).
        spacing: (H, W) spacing of the model grid (mm), for the aspect ratio.
        show_no_object: Draw "no object" queries (dashed grey); False skips them.

    Returns:
        A matplotlib Figure.
    """
    from matplotlib.patches import Rectangle

    num_classes = len(class_names)
    with_reference = any(p.reference is not None for p in prompts)
    columns = ["prompt boxes"] + (["ground truth"] if with_reference else []) + ["prediction (semantic map)"]
    height, width = prompts[0].image.shape
    window = intensity_window(np.stack([p.image for p in prompts]))
    aspect = float(spacing[0]) / float(spacing[1])
    ratio = panel_ratio((1, height, width), (1.0, *spacing), 0)
    figure = new_figure(*figure_inches(len(prompts), len(columns), ratio))
    axes = figure.subplots(len(prompts), len(columns), squeeze=False)
    present: set[int] = set()
    labelled: list[tuple[object, list, np.ndarray]] = []  # (panel, labels, their boxes) to place at the end
    for row, record in enumerate(prompts):
        grey = to_grey(record.image, window)
        maps = {"ground truth": record.reference, "prediction (semantic map)": record.semantic}
        for column, title in enumerate(columns):
            panel = axes[row, column]
            labels = maps.get(title)
            panel.imshow(blend_labels(grey, labels), interpolation="nearest", aspect=aspect)
            if labels is not None:
                values = [int(v) for v in np.unique(labels) if v > 0]
                present.update(values)
                if not values:
                    mark_empty(panel)
            label = f"file slice {record.file_slice} (model slice {record.grid_slice}): {title}"
            panel.set_title(label if column == 0 else title, fontsize=8)
            panel.set_axis_off()
        boxes_panel = axes[row, 0]
        rectangles = box_rectangles(record.boxes, height=height, width=width)  # (N, 4)
        texts, drawn = [], []
        for query, (rectangle, class_id, probability) in enumerate(
            zip(rectangles, record.classes.tolist(), record.probabilities.tolist(), strict=True)
        ):
            no_object = class_id >= num_classes
            if no_object and not show_no_object:
                continue
            if 0 < class_id < num_classes:
                present.add(class_id)
            colour = box_colour(class_id, num_classes)
            left, top, box_width, box_height = rectangle
            boxes_panel.add_patch(
                Rectangle(
                    (left, top),
                    box_width,
                    box_height,
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.5,
                    linestyle="--" if no_object else "-",
                    gid=f"q{query}",
                )
            )
            text = boxes_panel.text(
                left,
                top,
                query_label(query, class_id, probability, class_names),
                color=text_colour_on(colour),
                fontsize=7,
                va="top",
                clip_on=True,
                gid=f"label q{query}",
                bbox={"facecolor": colour, "alpha": 0.85, "pad": 0.5, "linewidth": 0},
            )
            text.set_in_layout(False)
            texts.append(text)
            drawn.append(rectangle)
        boxes_panel.set_xlim(-0.5, width - 0.5)
        boxes_panel.set_ylim(height - 0.5, -0.5)
        labelled.append((boxes_panel, texts, np.array(drawn).reshape(-1, 4)))
    add_legend(figure, prompt_legend_handles(sorted(present), class_names, show_no_object), "", dark=True)
    for panel, texts, drawn in labelled:
        place_labels(figure, panel, texts, drawn)
    return figure


def text_colour_on(background: Sequence[float]) -> str:
    """Black on light colours, white on dark ones (relative luminance, Rec. 709 weights, threshold 0.5)."""
    red, green, blue = background[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def mark_empty(panel) -> None:
    """Writes "empty" in the middle of a label panel without foreground (else it looks like a missing overlay)."""
    panel.text(
        0.5,
        0.5,
        "empty",
        transform=panel.transAxes,
        ha="center",
        va="center",
        color="white",
        fontsize=10,
        gid="empty",
        bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "linewidth": 0},
    )


def prompt_legend_handles(values: Sequence[int], class_names: Sequence[str], show_no_object: bool) -> list:
    """Legend keys in the boxes' colours: per class its box outline over its overlay tint, then box-only keys.

    Args:
        values: Class ids > 0 present in a map or as a box.
        class_names: K names in class-id order.
        show_no_object: Add the dashed grey "no object" key.
    """
    from matplotlib.patches import Patch

    handles = [
        Patch(
            facecolor=(*class_colour(value), OVERLAY_ALPHA),
            edgecolor=box_colour(value, len(class_names)),
            linestyle="-",
            linewidth=1.5,
            label=class_name(value, class_names),
        )
        for value in values
    ]
    keys = [(BACKGROUND_BOX_COLOUR, "-", f"box: {class_names[0]}")]
    if show_no_object:
        keys.append((NO_OBJECT_COLOUR, "--", "box: no object"))
    handles += [
        Patch(facecolor="none", edgecolor=colour, linestyle=style, linewidth=1.5, label=label)
        for colour, style, label in keys
    ]
    return handles


def draw_prompts(
    trained: TrainedModel,
    image: np.ndarray,
    geometry: Geometry,
    *,
    slices: Sequence[int],
    path: Path,
    reference: np.ndarray | None = None,
    show_no_object: bool = True,
) -> list[SlicePrompts]:
    """Writes the prompt figure (paper Fig. 1) of one case as a PNG.

    Args:
        trained: A model loaded with ``load_trained_model`` (any checkpoint, also ``checkpoint_latest.pt``).
        image: (C, X, Y, Z) channels in file order.
        geometry: The files' geometry.
        slices: File indices along the model's slice axis (``plans.transpose[0]``).
        path: PNG file to write.
        reference: (X, Y, Z) integer label values (adds a ground-truth column and centres the windows on it).
        show_no_object: Draw "no object" queries dashed grey (False: skip them).

    Returns:
        What was drawn, one record per row.

    Raises:
        DatasetError: Wrong channel count.
        ConfigError: A slice outside the volume.
        MaskSamError: The file could not be written.
    """
    prompts = run_prompts(trained, image, geometry, slices=slices, reference=reference)
    by_value = {value: name for name, value in trained.plans.labels.items()}
    class_names = [by_value[value] for value in sorted(by_value)]
    spacing = trained.plans.target_spacing[1:]
    figure = prompt_figure(prompts, class_names=class_names, spacing=spacing, show_no_object=show_no_object)
    save_figure(figure, path)
    return prompts
