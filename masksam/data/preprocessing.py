"""Preprocessing one case (transpose, crop, normalise, resample) and its inverse back to the file grid.

Forward, for a case read in file order (C, X, Y, Z)::

    transpose to (C, T, H, W)  ->  crop to the non-zero box  ->  normalise  ->  resample to target spacing

``properties`` records every step so :func:`restore_original_geometry` can take any array on the
preprocessed grid (a label map or class maps predicted by the network) back to the file's exact shape and
affine, and :func:`preprocessed_affine` can say where the preprocessed grid lies in world space.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from masksam.data.cache import CachedCase, CaseCache
from masksam.data.fingerprint import nonzero_bounding_box
from masksam.data.io import CaseFiles, Geometry, read_volume
from masksam.data.plans import NormalizationPlan, Plans
from masksam.data.resampling import (
    is_anisotropic,
    new_shape_for,
    resample_image,
    resample_label,
    resample_probabilities,
)
from masksam.errors import DatasetError

PREPROCESSING_VERSION = 1
# Foreground voxels remembered per class for foreground oversampling (nnU-Net keeps 10,000).
LOCATIONS_PER_CLASS = 10_000


def normalize(image: np.ndarray, plans: tuple[NormalizationPlan, ...]) -> np.ndarray:
    """Normalises every channel in place according to its plan.

    Args:
        image: (C, T, H, W) float32.
        plans: One normalisation plan per channel.

    Returns:
        The same array, normalised.
    """
    for channel, plan in enumerate(plans):
        data = image[channel]
        if plan.scheme == "ct":
            np.clip(data, plan.clip_low, plan.clip_high, out=data)
            data -= plan.mean
            data /= max(plan.std, 1e-8)
        elif plan.scheme == "zscore":
            mask = data != 0 if plan.use_nonzero_mask else None
            values = data[mask] if mask is not None else data
            mean, std = (float(values.mean()), float(values.std())) if values.size else (0.0, 1.0)
            data -= mean
            data /= max(std, 1e-8)
            if mask is not None:
                data[~mask] = 0
        elif plan.scheme != "none":
            raise ValueError(f"unknown normalisation scheme {plan.scheme!r}")
    return image


def preprocess_arrays(
    image: np.ndarray, label: np.ndarray | None, geometry: Geometry, plans: Plans
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocesses one case given as arrays in file order.

    Args:
        image: (C, X, Y, Z) float32 channels in file order.
        label: (X, Y, Z) integer label map, or None (inference).
        geometry: The files' geometry.
        plans: The dataset's plans.

    Returns:
        (image (C, T, H, W) float32, label (T, H, W) uint8/int16 or None, properties dict).
    """
    transpose = list(plans.transpose)
    image = np.ascontiguousarray(image.transpose(0, *[a + 1 for a in transpose]), dtype=np.float32)  # (C,T,H,W)
    label_t = None if label is None else label.transpose(transpose)  # (T, H, W)
    nonzero = (image != 0).any(axis=0)
    if label_t is not None:
        nonzero |= label_t != 0
    box = nonzero_bounding_box(nonzero)
    image = np.ascontiguousarray(image[(slice(None), *box)])
    shape_after_crop = image.shape[1:]
    image = normalize(image, plans.normalization)
    spacing = tuple(geometry.spacing[a] for a in transpose)
    size = new_shape_for(shape_after_crop, spacing, plans.target_spacing)
    separate = is_anisotropic(spacing, plans.target_spacing) or plans.anisotropic
    image = resample_image(image, size, separate=separate)
    if label_t is not None:
        dtype = np.uint8 if plans.num_classes <= 256 else np.int16
        label_t = resample_label(np.ascontiguousarray(label_t[box]).astype(dtype), size, separate=separate)
    properties = {
        "original_geometry": geometry.to_json(),
        "transpose": transpose,
        "crop_box": [[s.start, s.stop] for s in box],
        "shape_after_crop": list(shape_after_crop),
        "shape_after_resampling": list(size),
        "spacing": list(spacing),
        "target_spacing": list(plans.target_spacing),
        "separate_through_plane": separate,
    }
    return image, label_t, properties


def foreground_locations(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples up to ``LOCATIONS_PER_CLASS`` voxels of every foreground class.

    Args:
        label: (T, H, W) label map.
        rng: Random generator (the sample is part of the cache, so it is seeded per case).

    Returns:
        (M, 4) int32 rows (class, t, h, w), sorted by class.
    """
    flat = label.reshape(-1)
    order = np.argsort(flat, kind="stable")  # voxels grouped by class, one pass instead of one per class
    values, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    rows = []
    for value, start, count in zip(values.tolist(), starts.tolist(), counts.tolist(), strict=True):
        if value == 0:
            continue
        chosen = order[start : start + count]
        if count > LOCATIONS_PER_CLASS:
            chosen = rng.choice(chosen, LOCATIONS_PER_CLASS, replace=False)
        coords = np.stack(np.unravel_index(np.sort(chosen), label.shape), axis=1)  # (n, 3)
        rows.append(np.concatenate([np.full((len(coords), 1), value), coords], axis=1))
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 4), np.int32)


def preprocessing_fields(plans: Plans) -> dict:
    """The plans' fields that preprocessing depends on (and the preprocessing code's version)."""
    return {
        "version": PREPROCESSING_VERSION,
        "transpose": plans.transpose,
        "target_spacing": plans.target_spacing,
        "anisotropic": plans.anisotropic,
        "normalization": [vars(n) for n in plans.normalization],
    }


def preprocessing_key(plans: Plans) -> str:
    """Hash of ``preprocessing_fields``: plans with the same key preprocess every case identically."""
    return hashlib.sha256(json.dumps(preprocessing_fields(plans), sort_keys=True).encode()).hexdigest()[:16]


def cache_key(case: CaseFiles, plans: Plans) -> str:
    """Hash of everything a cached case depends on: preprocessing plans and the source files' size/mtime."""
    relevant = {**preprocessing_fields(plans), "files": []}
    for path in (*case.images, case.label):
        if path is not None:
            stat = Path(path).stat()
            relevant["files"].append([Path(path).name, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_training_case(args: tuple[CaseFiles, Plans, Path, int]) -> str:
    """Preprocesses one training case into the cache unless it is already up to date.

    Args:
        args: (case files, plans, cache folder, seed of the foreground sample).

    Returns:
        ``"written"`` or ``"skipped"``.

    Raises:
        DatasetError: A file is unreadable.
    """
    case, plans, folder, seed = args
    cache = CaseCache(folder)
    key = cache_key(case, plans)
    if cache.is_up_to_date(case.case_id, key):
        return "skipped"
    volumes = [read_volume(path, case_id=case.case_id) for path in case.images]
    if case.label is None:
        raise DatasetError(f"case {case.case_id}: training case without a label file; add it to labelsTr")
    label = read_volume(case.label, case_id=case.case_id, is_label=True).array
    image = np.stack([v.array for v in volumes])  # (C, X, Y, Z)
    image, label_p, properties = preprocess_arrays(image, np.rint(label).astype(np.int64), volumes[0].geometry, plans)
    properties.update(case_id=case.case_id, cache_key=key, classes_present=np.unique(label_p).tolist())
    locations = foreground_locations(label_p, np.random.default_rng(seed))
    cache.write(CachedCase(case.case_id, image, label_p, locations, properties))
    return "written"


def _inverse_permutation(transpose: list[int]) -> list[int]:
    return [int(a) for a in np.argsort(transpose)]


def restore_original_geometry(array: np.ndarray, properties: dict, *, is_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """Maps an array on the preprocessed grid back to the case's file grid.

    The inverse of :func:`preprocess_arrays`: resample to the cropped shape, paste into the full
    (transposed) volume (zeros outside the crop box), transpose back to file order.

    Args:
        array: (T, H, W) label map (``is_label=True``) or (K, T, H, W) float class maps on the
            preprocessed grid (shape ``properties["shape_after_resampling"]``).
        properties: The case's properties from preprocessing.
        is_label: Resample as a label map (per-class linear masks) rather than as float maps.

    Returns:
        (array in file order, shape (X, Y, Z) or (K, X, Y, Z); the file's 4x4 affine).
    """
    geometry = Geometry.from_json(properties["original_geometry"])
    transpose = properties["transpose"]
    crop_shape = tuple(properties["shape_after_crop"])
    separate = bool(properties["separate_through_plane"])
    full_shape = tuple(geometry.shape[a] for a in transpose)  # (T, H, W) before cropping
    box = tuple(slice(a, b) for a, b in properties["crop_box"])
    inverse = _inverse_permutation(transpose)
    if is_label:
        cropped = resample_label(array, crop_shape, separate=separate)
        full = np.zeros(full_shape, dtype=cropped.dtype)
        full[box] = cropped
        return full.transpose(inverse), geometry.affine
    cropped = resample_probabilities(array, crop_shape, separate=separate)
    full = np.zeros((array.shape[0], *full_shape), dtype=np.float32)
    full[(slice(None), *box)] = cropped
    return full.transpose(0, *[a + 1 for a in inverse]), geometry.affine


def preprocessed_affine(properties: dict) -> np.ndarray:
    """World placement of the preprocessed (T, H, W) grid.

    Args:
        properties: The case's properties from preprocessing.

    Returns:
        4x4 affine mapping preprocessed voxel indices (t, h, w, 1) to world coordinates.
    """
    geometry = Geometry.from_json(properties["original_geometry"])
    transpose = properties["transpose"]
    permute = np.zeros((4, 4))  # (t, h, w) -> file indices
    for new_axis, file_axis in enumerate(transpose):
        permute[file_axis, new_axis] = 1.0
    permute[3, 3] = 1.0
    crop = np.eye(4)
    crop[:3, 3] = [a for a, _ in properties["crop_box"]]
    scale = np.asarray(properties["shape_after_crop"]) / np.asarray(properties["shape_after_resampling"])
    resample = np.diag([*scale, 1.0])
    resample[:3, 3] = 0.5 * scale - 0.5  # voxel centres, align_corners=False
    return geometry.affine @ permute @ crop @ resample
