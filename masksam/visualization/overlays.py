"""Label overlays a person can read: one PNG, one row per slice, columns image | ground truth | prediction.

Display orientation. A slice along ``axis`` of a 3D array is shown with the first remaining array axis as rows
(top to bottom) and the second as columns (left to right), exactly as ``np.take(volume, index, axis)`` is
indexed. For a preprocessed (T, H, W) grid sliced along T that is the model's own (H, W) frame, so overlays
and prompt boxes (:mod:`masksam.visualization.prompts`) look alike. Pixels keep their physical shape: the
aspect ratio is the row spacing over the column spacing.

Colours. Each class value has a fixed colour (:func:`class_colour`; background is never coloured), blended
over the grey image with weight :data:`OVERLAY_ALPHA`. Grey levels are the image windowed at its 0.5 and
99.5 percentiles (over the whole volume, so every row shares one window).

Files are rendered to memory and written through a temporary file renamed over the target, so a killed run
never leaves half a picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from masksam.errors import ConfigError, DatasetError
from masksam.files import replace_atomically

# Fixed colours of label values 1, 2, ... (value v uses entry (v - 1) % len); none is grey, so overlays stand out.
CLASS_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10),  # red
    (0.10, 0.75, 0.20),  # green
    (0.15, 0.40, 0.95),  # blue
    (1.00, 0.85, 0.00),  # yellow
    (0.90, 0.20, 0.85),  # magenta
    (0.00, 0.85, 0.85),  # cyan
    (1.00, 0.50, 0.00),  # orange
    (0.55, 0.25, 0.85),  # purple
    (0.60, 0.35, 0.10),  # brown
    (0.60, 1.00, 0.30),  # lime
    (1.00, 0.55, 0.70),  # pink
    (0.00, 0.50, 0.50),  # teal
)
OVERLAY_ALPHA = 0.5
WINDOW_PERCENTILES = (0.5, 99.5)
DEFAULT_SLICE_COUNT = 3
DPI = 100
PANEL_INCHES = 3.0  # width of one panel; its height follows the slice's physical aspect
LEGEND_INCHES = 0.5  # band below the panels for the legend
PANEL_RATIO_LIMITS = (0.3, 3.0)  # panel height / width, so extreme slices stay readable


def class_colour(value: int) -> tuple[float, float, float]:
    """Fixed RGB colour (0..1) of label value ``value`` >= 1."""
    return CLASS_COLOURS[(int(value) - 1) % len(CLASS_COLOURS)]


def class_name(value: int, class_names: Sequence[str]) -> str:
    """``class_names[value]``, or ``"label V"`` for a value beyond the list."""
    return class_names[value] if 0 <= value < len(class_names) else f"label {value}"


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    """(low, high) grey-level window: the image's 0.5 and 99.5 percentiles (finite values only).

    Args:
        image: Any array of intensities.

    Returns:
        (low, high) with high > low (a constant image gets a window of width 1 around its value).
    """
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, WINDOW_PERCENTILES))
    if high <= low:
        return low - 0.5, low + 0.5
    return low, high


def to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Intensities mapped linearly onto [0, 1] by ``window`` (clipped outside it; NaN becomes 0).

    Args:
        image: (H, W) intensities.
        window: (low, high) from :func:`intensity_window`.

    Returns:
        (H, W) float32 grey levels.
    """
    low, high = window
    grey = (np.asarray(image, dtype=np.float64) - low) / (high - low)
    return np.nan_to_num(np.clip(grey, 0.0, 1.0), nan=0.0).astype(np.float32)


def blend_labels(grey: np.ndarray, labels: np.ndarray | None, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Grey image with every labelled pixel tinted in its class colour.

    A pixel of value v > 0 becomes ``(1 - alpha) · grey + alpha · class_colour(v)``; background stays grey.

    Args:
        grey: (H, W) grey levels in [0, 1].
        labels: (H, W) integer label values, or None (plain grey picture).
        alpha: Weight of the class colour.

    Returns:
        (H, W, 3) float32 RGB in [0, 1].
    """
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)  # (H, W, 3)
    if labels is None:
        return rgb
    labels = np.asarray(labels)
    maximum = int(labels.max(initial=0))
    if maximum == 0:
        return rgb
    table = np.zeros((maximum + 1, 3), dtype=np.float32)  # label value -> colour, row 0 unused
    table[1:] = [class_colour(value) for value in range(1, maximum + 1)]
    tinted = (1.0 - alpha) * rgb + alpha * table[labels]  # (H, W, 3)
    return np.where((labels > 0)[..., None], tinted, rgb)


def slice_of(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis``, rows = first remaining axis, columns = second (see module doc)."""
    return np.take(volume, index, axis=axis)


def display_aspect(spacing: Sequence[float], axis: int) -> float:
    """Displayed pixel height over width for slices along ``axis``: row spacing / column spacing."""
    rows, columns = (a for a in range(3) if a != axis)
    return float(spacing[rows]) / float(spacing[columns])


def check_slices(slices: Sequence[int], shape: Sequence[int], axis: int) -> list[int]:
    """Checks slice indices against the volume.

    Raises:
        ConfigError: An index outside ``0 .. shape[axis] - 1`` (one line naming the axis and the range).
    """
    size = int(shape[axis])
    bad = [int(index) for index in slices if not 0 <= int(index) < size]
    if bad:
        raise ConfigError(
            f"slice(s) {', '.join(map(str, bad))} outside 0..{size - 1} along axis {axis} (shape "
            f"{tuple(int(s) for s in shape)}); choose --slices in that range"
        )
    return [int(index) for index in slices]


def default_slices(
    shape: Sequence[int], axis: int, labels: np.ndarray | None, *, count: int = DEFAULT_SLICE_COUNT
) -> list[int]:
    """The ``count`` slices with the most foreground voxels, in index order; else the middle slice.

    Ties go to the lower index. Slices without foreground are never chosen, so a label with foreground on two
    slices gives those two.

    Args:
        shape: Volume shape.
        axis: Slice axis.
        labels: Label map of that shape (the reference if there is one, else the prediction), or None.
        count: How many slices at most.

    Returns:
        Sorted slice indices.
    """
    if labels is not None:
        other_axes = tuple(a for a in range(labels.ndim) if a != axis)
        foreground = np.count_nonzero(labels, axis=other_axes)  # (shape[axis],)
        order = np.argsort(-foreground, kind="stable")[:count]
        chosen = sorted(int(index) for index in order if foreground[index] > 0)
        if chosen:
            return chosen
    return [int(shape[axis]) // 2]


def panel_ratio(shape: Sequence[int], spacing: Sequence[float], axis: int) -> float:
    """Physical height / width of a slice along ``axis``, clipped to :data:`PANEL_RATIO_LIMITS`."""
    rows, columns = (a for a in range(3) if a != axis)
    ratio = (shape[rows] * float(spacing[rows])) / (shape[columns] * float(spacing[columns]))
    return float(np.clip(ratio, *PANEL_RATIO_LIMITS))


def figure_inches(num_rows: int, num_columns: int, ratio: float) -> tuple[float, float]:
    """(width, height) of a figure of ``num_rows`` × ``num_columns`` panels plus the legend band."""
    return num_columns * PANEL_INCHES, num_rows * PANEL_INCHES * ratio + LEGEND_INCHES


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global figure registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def legend_handles(values: Sequence[int], class_names: Sequence[str]) -> list:
    """One filled patch per label value, in its class colour, named from ``class_names``."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=class_colour(v), edgecolor="black", label=class_name(v, class_names)) for v in values]


def add_legend(figure, handles: list, empty_text: str, *, dark: bool = False) -> None:
    """Legend in the band below the panels (``empty_text`` there when there is nothing to explain).

    ``dark``: on a dark grey frame with white text, for keys meant to be seen on a dark image (white outlines).
    """
    if handles:
        style = {"facecolor": "0.25", "labelcolor": "white", "framealpha": 1.0} if dark else {}
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8, **style)
    else:
        figure.text(0.5, 0.5 * LEGEND_INCHES / figure.get_figheight(), empty_text, ha="center", fontsize=8)


def overlay_figure(
    image: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    slices: Sequence[int],
    axis: int,
    class_names: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
):
    """Builds the overlay figure (see :func:`draw_overlays`) without writing it.

    Returns:
        A matplotlib Figure of :func:`figure_inches` size at :data:`DPI`.
    """
    overlays = {"ground truth": reference, "prediction": prediction}
    columns = [("image", None)] + [(title, labels) for title, labels in overlays.items() if labels is not None]
    window = intensity_window(image)
    aspect = display_aspect(spacing, axis)
    figure = new_figure(*figure_inches(len(slices), len(columns), panel_ratio(image.shape, spacing, axis)))
    axes = figure.subplots(len(slices), len(columns), squeeze=False)
    present: set[int] = set()
    for row, index in enumerate(slices):
        grey = to_grey(slice_of(image, axis, index), window)
        for column, (title, labels) in enumerate(columns):
            labels_2d = None if labels is None else slice_of(labels, axis, index).astype(np.int64)
            if labels_2d is not None:
                present.update(int(v) for v in np.flatnonzero(np.bincount(labels_2d.ravel())) if v > 0)
            panel = axes[row, column]
            panel.imshow(blend_labels(grey, labels_2d), interpolation="nearest", aspect=aspect)
            panel.set_title(f"slice {index}: {title}" if column == 0 else title, fontsize=9)
            panel.set_axis_off()
    add_legend(figure, legend_handles(sorted(present), class_names), "no foreground on these slices")
    return figure


def save_figure(figure, path: Path) -> Path:
    """Renders ``figure`` to PNG in memory and writes it atomically (temporary file, then ``os.replace``).

    Raises:
        MaskSamError: The file could not be written.
    """
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    replace_atomically(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return path


def _check_same_shape(image: np.ndarray, labels: np.ndarray | None, what: str) -> None:
    if labels is not None and labels.shape != image.shape:
        raise DatasetError(f"{what} has shape {labels.shape} but the image has {image.shape}; pass arrays of one grid")


def draw_overlays(
    image: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    slices: Sequence[int] | None = None,
    axis: int,
    class_names: Sequence[str],
    path: Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[int]:
    """Writes one PNG: a row per slice, columns image | ground truth overlay | prediction overlay.

    Args:
        image: (X, Y, Z) or (T, H, W) intensities.
        reference: Integer label map of the same shape, or None (no ground-truth column).
        prediction: Integer label map of the same shape, or None (no prediction column).
        slices: Indices along ``axis``; None: :func:`default_slices` of the reference, else the prediction.
        axis: Slice axis (0, 1 or 2).
        class_names: Name of every label value (index 0 is background, never drawn).
        path: PNG file to write.
        spacing: Voxel size per array axis (mm), for the aspect ratio.

    Returns:
        The slice indices drawn.

    Raises:
        DatasetError: The arrays differ in shape or are not 3D.
        ConfigError: A bad axis or a slice outside the volume.
        MaskSamError: The file could not be written.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise DatasetError(f"image of shape {image.shape} is not 3D; pass one channel of a volume")
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis {axis} is not 0, 1 or 2")
    _check_same_shape(image, reference, "the reference")
    _check_same_shape(image, prediction, "the prediction")
    if slices is None:
        slices = default_slices(image.shape, axis, reference if reference is not None else prediction)
    slices = check_slices(slices, image.shape, axis)
    if not slices:
        raise ConfigError("no slice to draw; pass at least one slice index")
    figure = overlay_figure(
        image,
        reference=reference,
        prediction=prediction,
        slices=slices,
        axis=axis,
        class_names=class_names,
        spacing=spacing,
    )
    save_figure(figure, path)
    return slices
