"""Experiment planning: from a dataset fingerprint to ``plans.json`` (spacing, normalisation, patch, queries).

Axis conventions. Files are read in their own voxel order (X, Y, Z). The *through-plane* axis is the one
with the coarsest spacing (ties: the one with the fewest voxels, so ACDC's slice axis wins even though its
spacing is written as 1 mm). Preprocessed arrays are transposed to (T, H, W): through-plane axis first,
then the two in-plane axes in file order. Every spacing and shape in ``Plans`` after ``transpose`` is in
that (T, H, W) order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from masksam.data.fingerprint import DatasetFingerprint
from masksam.data.io import DatasetDescription
from masksam.data.presets import DataPreset
from masksam.errors import ConfigError

PLANS_VERSION = 1
# Spacing ratio above which a volume counts as anisotropic (resample in-plane and through-plane separately).
ANISOTROPY_THRESHOLD = 3.0
# zscore over the non-zero mask only when cropping removes at least this much of the volume (brain-MRI style).
NONZERO_MASK_FRACTION = 0.75
CT_NAMES = ("ct",)


@dataclass(frozen=True)
class NormalizationPlan:
    """How one channel is normalised.

    Attributes:
        scheme: ``"ct"`` (clip to foreground 0.5/99.5 percentiles, z-score with foreground mean/std),
            ``"zscore"`` (per image), or ``"none"``.
        clip_low: CT lower clip value.
        clip_high: CT upper clip value.
        mean: CT foreground mean.
        std: CT foreground standard deviation.
        use_nonzero_mask: zscore: statistics over non-zero voxels only, zero outside.
    """

    scheme: str
    clip_low: float = 0.0
    clip_high: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    use_nonzero_mask: bool = False


@dataclass(frozen=True)
class Plans:
    """Everything preprocessing, sampling and training need to know about a dataset (``plans.json``).

    Attributes:
        dataset_name: Name from dataset.json.
        channel_names: Channel index (as string) -> modality.
        labels: Label name -> value.
        num_classes: K, classes including background.
        file_ending: File ending of the raw files.
        transpose: File axes in (T, H, W) order, e.g. ``(2, 0, 1)`` for a Z slice axis.
        original_median_spacing: (X, Y, Z) median spacing of the raw data (mm).
        original_median_shape: (X, Y, Z) median raw shape.
        target_spacing: (T, H, W) spacing after resampling (mm).
        anisotropic: Resample in-plane and through-plane separately (nearest through-plane).
        median_shape: (T, H, W) median shape after cropping and resampling.
        normalization: One plan per channel.
        patch_size: (T, H, W) training patch.
        num_queries: N queries per slice.
        batch_size: Patches per training step.
        oversample_foreground_percent: Fraction of each batch forced to contain foreground.
        include_background: Background is a target segment (paper default).
        preset: Preset that fixed patch size and queries, or None.
        preprocessed_folder: Cache folder, relative to the plans folder (``preprocessed_<key>``, named by the
            preprocessing fields: see ``cache_folder``; ``preprocessed`` in plans of older masksam versions).
        plans_version: Format version.
        spacing_known: False when dataset.json says spacing is unknown (then 1 mm is assumed everywhere).
    """

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    num_classes: int
    file_ending: str
    transpose: tuple[int, int, int]
    original_median_spacing: tuple[float, float, float]
    original_median_shape: tuple[int, int, int]
    target_spacing: tuple[float, float, float]
    anisotropic: bool
    median_shape: tuple[int, int, int]
    normalization: tuple[NormalizationPlan, ...]
    patch_size: tuple[int, int, int]
    num_queries: int
    batch_size: int = 2
    oversample_foreground_percent: float = 0.33
    include_background: bool = True
    preset: str | None = None
    preprocessed_folder: str = "preprocessed"
    plans_version: int = PLANS_VERSION
    spacing_known: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        """C, input channels."""
        return len(self.channel_names)

    def to_json(self) -> dict:
        """Returns a JSON-serialisable dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Plans:
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: Unknown version or missing fields.
        """
        if data.get("plans_version") != PLANS_VERSION:
            raise ConfigError(
                f"plans_version {data.get('plans_version')!r} is not {PLANS_VERSION}; re-run masksam plan"
            )
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        try:
            for key in ("transpose", "original_median_shape", "median_shape", "patch_size"):
                values[key] = tuple(int(v) for v in values[key])
            for key in ("original_median_spacing", "target_spacing"):
                values[key] = tuple(float(v) for v in values[key])
            values["normalization"] = tuple(NormalizationPlan(**n) for n in values["normalization"])
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise ConfigError(f"plans.json is incomplete or malformed ({error}); re-run masksam plan") from error

    def save(self, path: Path) -> None:
        """Writes ``plans.json`` atomically."""
        from masksam.data.cache import write_json_atomic

        write_json_atomic(self.to_json(), path)

    @classmethod
    def load(cls, path: Path) -> Plans:
        """Reads ``plans.json``.

        Raises:
            ConfigError: Missing or malformed file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "plans.json"
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: plans.json not found; run 'masksam plan DATASET_DIR' first") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error}); re-run masksam plan") from error


def choose_transpose(spacing: np.ndarray, shape: np.ndarray) -> tuple[int, int, int]:
    """Puts the through-plane axis first: coarsest spacing, ties broken by fewest voxels.

    Args:
        spacing: (3,) median spacing in file order.
        shape: (3,) median shape in file order.

    Returns:
        File axes in (T, H, W) order.
    """
    coarsest = np.isclose(spacing, spacing.max(), rtol=1e-3)
    candidates = np.flatnonzero(coarsest)
    through = int(candidates[np.argmin(shape[candidates])])
    return (through, *[a for a in range(3) if a != through])


def choose_target_spacing(spacings: np.ndarray, shapes: np.ndarray, through: int) -> tuple[np.ndarray, bool]:
    """Median spacing; for strongly anisotropic data a finer through-plane target (nnU-Net's rule).

    Args:
        spacings: (cases, 3) spacing in file order.
        shapes: (cases, 3) shapes in file order.
        through: Index of the through-plane axis.

    Returns:
        (target spacing (3,) in file order, whether the data are anisotropic).
    """
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    in_plane = [a for a in range(3) if a != through]
    anisotropic = bool(target[through] > ANISOTROPY_THRESHOLD * target[in_plane].max())
    if anisotropic and median_shape[through] * ANISOTROPY_THRESHOLD < median_shape[in_plane].min():
        # Few, thick slices: the median would throw away too much through-plane resolution.
        finer = np.percentile(spacings[:, through], 10)
        target[through] = max(finer, target[in_plane].max() + 1e-5)
    return target, anisotropic


def _normalization(description: DatasetDescription, fingerprint: DatasetFingerprint) -> tuple[NormalizationPlan, ...]:
    plans = []
    for channel, name in description.channel_names.items():
        if name.strip().lower() in CT_NAMES:
            stats = fingerprint.intensity_statistics[channel]
            plans.append(
                NormalizationPlan("ct", stats.percentile_00_5, stats.percentile_99_5, stats.mean, max(stats.std, 1e-8))
            )
        elif name.strip().lower() in ("none", "nonorm", "no_norm"):
            plans.append(NormalizationPlan("none"))
        else:
            plans.append(
                NormalizationPlan(
                    "zscore", use_nonzero_mask=fingerprint.median_nonzero_fraction < NONZERO_MASK_FRACTION
                )
            )
    return tuple(plans)


def _default_patch(median_shape: np.ndarray) -> tuple[int, int, int]:
    # In-plane 256 (SAM-family input size), smaller for small images (rounded up to a multiple of 32);
    # at most 8 slices, fewer if the volumes are thinner.
    in_plane = [int(min(256, 32 * np.ceil(s / 32))) for s in median_shape[1:]]
    side = max(in_plane)
    return (int(max(1, min(8, median_shape[0]))), side, side)


def plan_experiment(
    description: DatasetDescription,
    fingerprint: DatasetFingerprint,
    *,
    preset: DataPreset | None = None,
    batch_size: int = 2,
    include_background: bool = True,
    spacing_known: bool = True,
) -> Plans:
    """Chooses spacing, normalisation, patch size and query count.

    Args:
        description: Parsed ``dataset.json``.
        fingerprint: The dataset's fingerprint.
        preset: Fixes patch size and N when given.
        batch_size: Patches per training step.
        include_background: Background is a target segment.
        spacing_known: Whether the files' spacing is real (recorded in the plans).

    Returns:
        The plans.
    """
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)  # (cases, 3)
    shapes = np.asarray(fingerprint.shapes, dtype=np.float64)  # (cases, 3)
    median_spacing = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    transpose = choose_transpose(median_spacing, median_shape)
    target, anisotropic = choose_target_spacing(spacings, shapes, transpose[0])
    resampled = np.median(shapes * spacings / target, axis=0)  # (3,) file order
    median_resampled = np.round(resampled[list(transpose)]).astype(int)  # (T, H, W)
    if preset is not None:
        patch_size, num_queries = preset.patch_size, preset.num_queries
    else:
        patch_size = _default_patch(median_resampled)
        classes = description.num_classes - (0 if include_background else 1)
        num_queries = int(max(8, 8 * np.ceil(classes / 8)))
    if num_queries < description.num_classes - (0 if include_background else 1):
        raise ConfigError(
            f"{num_queries} queries cannot hold {description.num_classes} classes per slice; "
            "choose a preset with more queries"
        )
    return Plans(
        dataset_name=description.name,
        channel_names={str(k): v for k, v in description.channel_names.items()},
        labels=dict(description.labels),
        num_classes=description.num_classes,
        file_ending=description.file_ending,
        transpose=transpose,
        original_median_spacing=tuple(float(s) for s in median_spacing),
        original_median_shape=tuple(int(round(s)) for s in median_shape),
        target_spacing=tuple(float(target[a]) for a in transpose),
        anisotropic=anisotropic,
        median_shape=tuple(int(s) for s in median_resampled),
        normalization=_normalization(description, fingerprint),
        patch_size=tuple(int(s) for s in patch_size),
        num_queries=int(num_queries),
        batch_size=batch_size,
        include_background=include_background,
        preset=preset.name if preset is not None else None,
        spacing_known=spacing_known,
    )
