"""Box labels that do not cover each other: each label goes to the first free spot beside its box's corners.

Placement works in display pixels, after the figure's layout is fixed (``Figure.draw_without_rendering``),
because a label's size is only known in pixels while a box is known in data coordinates. For each box, in
query order, the candidates are: inside and outside each of its four corners (top-left first, where a reader
looks), then the same corners pushed further out one label height at a time. Every candidate is moved inside
the panel; the first one that overlaps no label placed before it wins. When none is free (more labels than
the panel can hold) the label stays at the box's top-left corner.

The labels must be excluded from the layout (``set_in_layout(False)``), so placing them does not move the
panels they were placed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

LABEL_MARGIN_PX = 1.5  # around each label's text: its background box pads the text by about a pixel


def _candidates(box: tuple[float, float, float, float], width: float, height: float, steps: int) -> Iterator:
    """Lower-left corners (display px) of a ``width`` × ``height`` label around ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    columns = (x0, x1 - width)  # left-aligned with the box's left edge, right-aligned with its right edge
    for step in range(steps):
        shift = step * height
        for x in columns:
            yield x, y1 - height - shift  # inside the top edge (pushed down)
            yield x, y1 + shift  # above the top edge (pushed up)
            yield x, y0 + shift  # inside the bottom edge (pushed up)
            yield x, y0 - height - shift  # below the bottom edge (pushed down)


def _inside(x: float, y: float, width: float, height: float, frame) -> tuple[float, float]:
    """The lower-left corner moved (as little as possible) so the label lies inside ``frame``."""
    x = float(np.clip(x, frame.x0, max(frame.x0, frame.x1 - width)))
    y = float(np.clip(y, frame.y0, max(frame.y0, frame.y1 - height)))
    return x, y


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(figure, panel, labels: Sequence, rectangles: np.ndarray) -> None:
    """Moves each label beside its box so that no two labels of ``panel`` overlap (where the panel has room).

    Args:
        figure: The figure holding ``panel``, with a canvas and its final content (legend included).
        panel: The axes the boxes and labels are drawn in.
        labels: One ``matplotlib.text.Text`` per box (in ``panel``, excluded from the layout).
        rectangles: (N, 4) boxes as (left, top, width, height) in data coordinates (rows grow downwards).
    """
    if not labels:
        return
    figure.draw_without_rendering()  # fixes the layout: panel positions and text sizes in pixels
    renderer = figure.canvas.get_renderer()
    frame = panel.get_window_extent(renderer)
    to_pixels, to_data = panel.transData, panel.transData.inverted()
    taken: list[tuple[float, float, float, float]] = []
    for label, (left, top, box_width, box_height) in zip(labels, rectangles, strict=True):
        extent = label.get_window_extent(renderer)
        width, height = extent.width + 2 * LABEL_MARGIN_PX, extent.height + 2 * LABEL_MARGIN_PX
        corners = to_pixels.transform([(left, top), (left + box_width, top + box_height)])  # (2, 2) px
        box = (*corners.min(axis=0), *corners.max(axis=0))
        steps = max(1, int(frame.height // max(height, 1.0)))
        chosen = None
        for x, y in _candidates(box, width, height, steps):
            x, y = _inside(x, y, width, height, frame)
            spot = (x, y, x + width, y + height)
            if not any(_overlaps(spot, other) for other in taken):
                chosen = spot
                break
        if chosen is None:  # no free spot: the first candidate, overlapping
            x, y = _inside(box[0], box[3] - height, width, height, frame)
            chosen = (x, y, x + width, y + height)
        taken.append(chosen)
        label.set_position(to_data.transform((chosen[0] + LABEL_MARGIN_PX, chosen[1] + LABEL_MARGIN_PX)))
        label.set_horizontalalignment("left")
        label.set_verticalalignment("bottom")
