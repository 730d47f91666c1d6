"""Resampling (T, H, W) volumes to a new grid with torch, anisotropy-aware as nnU-Net.

Grids are voxel-centre aligned (``align_corners=False``): new voxel i' sits at old index
``(i' + 0.5) * n / n' - 0.5`` along an axis of old size n and new size n'. That makes the mapping exactly
invertible and lets ``preprocessing.preprocessed_affine`` state where the new grid lies in world space.

Anisotropic data (spacing ratio > 3): in-plane interpolation per slice (images bicubic, labels linear on
one-hot masks), then nearest neighbour along the through-plane axis, so thick slices are never blended.
Isotropic data: trilinear for images, trilinear on one-hot masks for labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ANISOTROPY_THRESHOLD = 3.0


def is_anisotropic(*spacings: tuple[float, ...]) -> bool:
    """True if any of the given spacings has max/min above the anisotropy threshold."""
    return any(max(s) / min(s) > ANISOTROPY_THRESHOLD for s in spacings)


def new_shape_for(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    """Shape of ``shape`` voxels of ``spacing`` resampled to ``target`` spacing (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))


def _resample_float(
    volume: torch.Tensor, size: tuple[int, int, int], separate: bool, in_plane_mode: str
) -> torch.Tensor:
    # volume: (N, T, H, W) float32 -> (N, T', H', W')
    t, h, w = volume.shape[1:]
    if (t, h, w) == tuple(size):
        return volume
    if not separate:
        return F.interpolate(volume[None], size=size, mode="trilinear", align_corners=False)[0]
    if (h, w) != tuple(size[1:]):
        n = volume.shape[0]
        flat = volume.reshape(1, n * t, h, w)  # (1, N*T, H, W): every slice of every channel resampled alike
        kwargs = {"antialias": False} if in_plane_mode == "bicubic" else {}
        flat = F.interpolate(flat, size=size[1:], mode=in_plane_mode, align_corners=False, **kwargs)
        volume = flat.reshape(n, t, *size[1:])
    if t != size[0]:
        volume = F.interpolate(volume[None], size=size, mode="nearest-exact")[0]
    return volume


def resample_image(image: np.ndarray, size: tuple[int, int, int], *, separate: bool) -> np.ndarray:
    """Resamples an image.

    Args:
        image: (C, T, H, W) float array.
        size: (T', H', W') target shape.
        separate: In-plane and through-plane separately (anisotropic data).

    Returns:
        (C, T', H', W') float32.
    """
    if tuple(image.shape[1:]) == tuple(size):
        return image.astype(np.float32, copy=False)
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return _resample_float(volume, size, separate, "bicubic").numpy()


def resample_label(label: np.ndarray, size: tuple[int, int, int], *, separate: bool) -> np.ndarray:
    """Resamples a label map by interpolating each class's mask linearly and keeping the strongest class.

    Args:
        label: (T, H, W) integer label map.
        size: (T', H', W') target shape.
        separate: In-plane and through-plane separately (anisotropic data).

    Returns:
        (T', H', W') label map with ``label``'s dtype.
    """
    if tuple(label.shape) == tuple(size):
        return label
    volume = torch.from_numpy(np.ascontiguousarray(label))
    best = torch.full(size, -1.0)
    result = torch.zeros(size, dtype=volume.dtype)
    # One class at a time bounds memory to two float volumes (K one-hot maps at once do not fit for CT).
    for value in torch.unique(volume).tolist():
        mask = (volume == value).float()[None]  # (1, T, H, W)
        score = _resample_float(mask, size, separate, "bilinear")[0]  # (T', H', W')
        better = score > best
        best = torch.where(better, score, best)
        result[better] = value
    return result.numpy()


def resample_probabilities(probabilities: np.ndarray, size: tuple[int, int, int], *, separate: bool) -> np.ndarray:
    """Resamples per-class maps (probabilities or logits) linearly.

    Args:
        probabilities: (K, T, H, W) float array.
        size: (T', H', W') target shape.
        separate: In-plane (bilinear) then through-plane (nearest) separately.

    Returns:
        (K, T', H', W') float32.
    """
    volume = torch.from_numpy(np.ascontiguousarray(probabilities, dtype=np.float32))
    return _resample_float(volume, size, separate, "bilinear").numpy()
