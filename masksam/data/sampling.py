"""Random training patches from cached cases, with foreground oversampling and padding (nnU-Net style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Patch:
    """One sampled patch.

    Attributes:
        image: (C, T, H, W) float32.
        label: (T, H, W) label map (same dtype as the cache), padding = 0 (background).
        start: (3,) patch origin in the case's preprocessed grid (may be negative: padding).
    """

    image: np.ndarray
    label: np.ndarray
    start: tuple[int, int, int]


def crop_with_padding(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], value: float = 0) -> np.ndarray:
    """Cuts ``size`` voxels from the last ``len(size)`` axes of ``array`` at ``start``, padding outside.

    Only the in-bounds part is read, so on a memory map only those pages are touched.

    Args:
        array: (..., D0, D1, D2) array (memory maps welcome).
        start: Origin per spatial axis (negative or past the end means padding).
        size: Patch size per spatial axis.
        value: Padding value.

    Returns:
        (..., *size) array.
    """
    lead = array.ndim - len(size)
    spatial = array.shape[lead:]
    source, target = [], []
    for s, n, d in zip(start, size, spatial, strict=True):
        lo, hi = max(s, 0), min(s + n, d)
        source.append(slice(lo, max(hi, lo)))
        target.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    inside = np.asarray(array[(Ellipsis, *source)])
    if inside.shape[lead:] == tuple(size):
        return np.array(inside)  # own copy, detached from the memory map
    out = np.full((*array.shape[:lead], *size), value, dtype=array.dtype)
    out[(Ellipsis, *target)] = inside
    return out


def choose_patch_start(
    shape: tuple[int, int, int],
    size: tuple[int, int, int],
    rng: np.random.Generator,
    centre: tuple[int, int, int] | None = None,
) -> tuple[int, int, int]:
    """Picks a patch origin: uniformly at random, or around ``centre`` (a foreground voxel).

    Along an axis where the volume is smaller than the patch, the volume lands at a random place inside
    the patch (the rest is padding); otherwise the patch stays inside the volume.

    Args:
        shape: (T, H, W) of the volume.
        size: (T, H, W) of the patch.
        rng: Random generator.
        centre: Voxel to put in the middle of the patch, if any.

    Returns:
        (3,) origin (negative along axes that need padding).
    """
    start = []
    for axis, (d, n) in enumerate(zip(shape, size, strict=True)):
        low, high = min(0, d - n), max(0, d - n)  # allowed origins
        if centre is None:
            start.append(int(rng.integers(low, high + 1)))
        else:
            start.append(int(np.clip(centre[axis] - n // 2, low, high)))
    return tuple(start)


def sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    foreground: np.ndarray,
    size: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    force_foreground: bool,
) -> Patch:
    """Samples one patch from a case.

    Args:
        image: (C, T, H, W) image (memory map welcome).
        label: (T, H, W) label map.
        foreground: (M, 4) rows (class, t, h, w) of foreground voxels.
        size: (T, H, W) patch size.
        rng: Random generator.
        force_foreground: Centre the patch on a voxel of a random present foreground class (uniform over
            classes, so rare classes are seen as often as large ones); random if the case has none.

    Returns:
        The patch.
    """
    centre = None
    if force_foreground and len(foreground):
        classes = np.unique(foreground[:, 0])
        chosen = rng.choice(classes)
        rows = foreground[foreground[:, 0] == chosen]
        centre = tuple(int(v) for v in rows[rng.integers(len(rows)), 1:])
    start = choose_patch_start(label.shape, size, rng, centre)
    # Padding takes the case's darkest value, as the backbones saw black borders (a pad at 0, the z-scored
    # mean, would turn into a grey band once the slice is scaled to [0, 1] for the backbone).
    return Patch(
        image=crop_with_padding(image, start, size, float(image.min())).astype(np.float32, copy=False),
        label=crop_with_padding(label, start, size, 0),
        start=start,
    )
