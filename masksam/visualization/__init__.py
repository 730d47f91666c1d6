"""Pictures a person can read (``masksam show``): label overlays and the model's generated box prompts.

What a user calls::

    from masksam.visualization import draw_overlays, draw_prompts

    draw_overlays(image, reference=label, prediction=pred, axis=2, class_names=names, path=OUT / "case.png")
    draw_prompts(load_trained_model(checkpoint), channels, geometry, slices=[3, 5], path=OUT / "prompts.png")
"""

from masksam.visualization.overlays import (
    blend_labels,
    class_colour,
    default_slices,
    draw_overlays,
    intensity_window,
    overlay_figure,
    save_figure,
)
from masksam.visualization.prompts import (
    SlicePrompts,
    box_rectangles,
    draw_prompts,
    grid_slice_index,
    prompt_figure,
    run_prompts,
)

__all__ = [
    "SlicePrompts",
    "blend_labels",
    "box_rectangles",
    "class_colour",
    "default_slices",
    "draw_overlays",
    "draw_prompts",
    "grid_slice_index",
    "intensity_window",
    "overlay_figure",
    "prompt_figure",
    "run_prompts",
    "save_figure",
]
