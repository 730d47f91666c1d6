"""Dataset fingerprint: spacings, shapes and foreground intensity statistics (nnU-Net's first step)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from masksam.data.io import CaseFiles, DatasetDescription, read_volume
from masksam.data.parallel import map_cases

# Foreground voxels sampled per case and channel for intensity statistics (as nnU-Net).
SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class IntensityStatistics:
    """Statistics of one channel's foreground intensities, pooled over cases."""

    mean: float
    std: float
    median: float
    percentile_00_5: float
    percentile_99_5: float
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityStatistics:
        """Computes the statistics of a 1D sample (zeros if empty)."""
        if values.size == 0:
            return cls(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        values = values.astype(np.float64)
        low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
        return cls(
            float(values.mean()),
            float(values.std()),
            float(median),
            float(low),
            float(high),
            float(values.min()),
            float(values.max()),
        )


@dataclass(frozen=True)
class CaseFingerprint:
    """What planning needs to know about one case.

    Attributes:
        case_id: Case id.
        shape: (X, Y, Z) array shape in file order.
        spacing: (X, Y, Z) voxel size in mm.
        nonzero_fraction: Fraction of the volume kept by cropping to the non-zero bounding box.
        foreground_samples: One 1D float32 array per channel of intensities sampled in the label foreground.
    """

    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    nonzero_fraction: float
    foreground_samples: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class DatasetFingerprint:
    """Pooled fingerprint of a dataset (written as ``dataset_fingerprint.json``).

    Attributes:
        case_ids: Cases, in order.
        shapes: Per-case (X, Y, Z) shape.
        spacings: Per-case (X, Y, Z) spacing in mm.
        median_nonzero_fraction: Median fraction of the volume inside the non-zero bounding box.
        intensity_statistics: Per channel, statistics of foreground intensities.
    """

    case_ids: list[str]
    shapes: list[tuple[int, int, int]]
    spacings: list[tuple[float, float, float]]
    median_nonzero_fraction: float
    intensity_statistics: list[IntensityStatistics]

    def to_json(self) -> dict:
        """Returns a JSON-serialisable dict."""
        return asdict(self)

    @property
    def median_spacing(self) -> np.ndarray:
        """(3,) median spacing in file order."""
        return np.median(np.asarray(self.spacings, dtype=np.float64), axis=0)

    @property
    def median_shape(self) -> np.ndarray:
        """(3,) median shape in file order."""
        return np.median(np.asarray(self.shapes, dtype=np.float64), axis=0)


def nonzero_bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the True voxels of ``mask`` as slices (the full array if none is True)."""
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def fingerprint_case(args: tuple[CaseFiles, DatasetDescription, int]) -> CaseFingerprint:
    """Fingerprints one case.

    Args:
        args: (case files, dataset description, seed for the foreground sample).

    Returns:
        The case fingerprint.
    """
    case, description, seed = args
    images = [read_volume(path, case_id=case.case_id) for path in case.images]
    label = read_volume(case.label, case_id=case.case_id, is_label=True).array
    stack = np.stack([v.array for v in images])  # (C, X, Y, Z)
    nonzero = (stack != 0).any(axis=0) | (label != 0)
    box = nonzero_bounding_box(nonzero)
    kept = float(np.prod([s.stop - s.start for s in box]) / nonzero.size)
    foreground = label > 0
    rng = np.random.default_rng(seed)
    samples = []
    for volume in stack:
        values = volume[foreground]
        if values.size > SAMPLES_PER_CASE:
            values = rng.choice(values, SAMPLES_PER_CASE, replace=False)
        samples.append(values.astype(np.float32))
    geometry = images[0].geometry
    return CaseFingerprint(case.case_id, geometry.shape, geometry.spacing, kept, tuple(samples))


def fingerprint_dataset(
    cases: list[CaseFiles],
    description: DatasetDescription,
    *,
    num_workers: int = 0,
    seed: int = 1234,
    progress: bool = False,
) -> DatasetFingerprint:
    """Fingerprints every training case and pools the statistics.

    Args:
        cases: Training cases (validated).
        description: Parsed ``dataset.json``.
        num_workers: Worker processes (0 = this process).
        seed: Seed of the foreground intensity sample.
        progress: Show a progress bar.

    Returns:
        The dataset fingerprint.
    """
    jobs = [(case, description, seed + index) for index, case in enumerate(cases)]
    per_case = map_cases(fingerprint_case, jobs, num_workers=num_workers, description="fingerprint", progress=progress)
    statistics = [
        IntensityStatistics.of(np.concatenate([fp.foreground_samples[c] for fp in per_case]))
        for c in range(description.num_channels)
    ]
    return DatasetFingerprint(
        case_ids=[fp.case_id for fp in per_case],
        shapes=[fp.shape for fp in per_case],
        spacings=[fp.spacing for fp in per_case],
        median_nonzero_fraction=float(np.median([fp.nonzero_fraction for fp in per_case])),
        intensity_statistics=statistics,
    )


def write_fingerprint(fingerprint: DatasetFingerprint, path: Path) -> None:
    """Writes the fingerprint as JSON (atomically)."""
    from masksam.data.cache import write_json_atomic

    write_json_atomic(fingerprint.to_json(), path)
