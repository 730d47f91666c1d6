"""Dice and HD95 of 3D label maps, per class, with anisotropic voxel spacing.

Definitions (``P`` predicted mask, ``R`` reference mask, spacing ``s`` in mm per array axis):

- **Dice** = 2·|P ∩ R| / (|P| + |R|), counted in voxels.
- **Surface** of a mask M: the voxels of M with at least one face neighbour (6-connectivity) outside M,
  i.e. M minus its binary erosion by the 3D cross. Outside the array counts as background, so mask voxels
  on the array's border are surface voxels.
- **Surface distances**: for every surface voxel of P the Euclidean distance in mm between voxel centres
  (axis ``i`` scaled by ``s[i]``) to the nearest surface voxel of R, and the same from R to P.
- **HD95** = the 95th percentile (numpy's linear interpolation) of the *pooled* distances of both
  directions, |∂P| + |∂R| values in one array: the definition of medpy's ``hd95`` used by nnU-Net v1.
  MONAI's ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two directed
  95th percentiles; a percentile of the pooled values lies between the two directed ones, so ours is
  never larger than MONAI's.
- **Empty masks**: both empty -> Dice 1.0, HD95 0.0. Exactly one empty -> Dice 0.0, HD95 = the diagonal
  of the whole volume in mm, ``sqrt(sum((shape[i] * s[i]) ** 2))``: a finite worst case, so means over
  cases count a missed or hallucinated structure as a failure instead of skipping it.

Distances are computed on the bounding box of both masks plus a one-voxel margin (the nearest surface
voxel of a mask always lies inside that box), so large CT volumes cost what their structures cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

HD_PERCENTILE = 95.0
# Face-connected 3D cross: a voxel is on the surface if one of its 6 face neighbours is background.
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)
_MARGIN = 1

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one case.

    Attributes:
        dice: Dice coefficient in [0, 1] (1.0 when both masks are empty).
        hd95: 95th percentile of the pooled symmetric surface distances in mm (0.0 when both masks are empty;
            the volume diagonal when exactly one is).
        true_positives: Voxels in both masks.
        false_positives: Predicted voxels outside the reference.
        false_negatives: Reference voxels not predicted.
    """

    dice: float
    hd95: float
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def num_predicted(self) -> int:
        """Voxels in the predicted mask."""
        return self.true_positives + self.false_positives

    @property
    def num_reference(self) -> int:
        """Voxels in the reference mask."""
        return self.true_positives + self.false_negatives


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the field of view in mm, ``sqrt(sum((shape[i] * spacing[i]) ** 2))``: the HD95 of a
    case where exactly one of the two masks is empty."""
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(extent**2)))


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a binary mask (6-connectivity; the array border counts as background).

    Args:
        mask: (X, Y, Z) boolean mask.

    Returns:
        (X, Y, Z) boolean mask of the voxels of ``mask`` that touch background through a face.
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_SURFACE_STRUCTURE, border_value=0)


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of one mask to the nearest surface voxel of the other.

    Both masks must be non-empty.

    Args:
        prediction: (X, Y, Z) boolean mask.
        reference: (X, Y, Z) boolean mask of the same shape.
        spacing: Voxel size in mm per array axis.

    Returns:
        (prediction -> reference distances of shape (|∂P|,), reference -> prediction distances of shape (|∂R|,)).
    """
    surface_prediction, surface_reference = surface(prediction), surface(reference)
    sampling = tuple(float(s) for s in spacing)
    # The EDT of ~S gives, at every voxel, the distance to the nearest voxel of S.
    to_reference = ndimage.distance_transform_edt(~surface_reference, sampling=sampling)
    to_prediction = ndimage.distance_transform_edt(~surface_prediction, sampling=sampling)
    return to_reference[surface_prediction], to_prediction[surface_reference]


def _union_box(first: Box | None, second: Box | None, shape: Sequence[int], margin: int) -> Box:
    boxes = [b for b in (first, second) if b is not None]
    return tuple(
        slice(
            max(0, min(b[axis].start for b in boxes) - margin),
            min(shape[axis], max(b[axis].stop for b in boxes) + margin),
        )
        for axis in range(3)
    )


def _mask_box(mask: np.ndarray) -> Box | None:
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    return boxes[0] if boxes else None


def _metrics_of_cropped(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], empty_distance: float
) -> ClassMetrics:
    # prediction, reference: (x, y, z) boolean crops that hold every voxel of both masks plus a margin.
    true_positives = int(np.count_nonzero(prediction & reference))
    num_predicted, num_reference = int(np.count_nonzero(prediction)), int(np.count_nonzero(reference))
    counts = dict(
        true_positives=true_positives,
        false_positives=num_predicted - true_positives,
        false_negatives=num_reference - true_positives,
    )
    if num_predicted == 0 and num_reference == 0:
        return ClassMetrics(dice=1.0, hd95=0.0, **counts)
    if num_predicted == 0 or num_reference == 0:
        return ClassMetrics(dice=0.0, hd95=empty_distance, **counts)
    dice = 2.0 * true_positives / (num_predicted + num_reference)
    forward, backward = surface_distances(prediction, reference, spacing)
    hd95 = float(np.percentile(np.concatenate([forward, backward]), HD_PERCENTILE))
    return ClassMetrics(dice=float(dice), hd95=hd95, **counts)


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> ClassMetrics:
    """Dice and HD95 of two binary masks (see the module docstring for the exact definitions).

    Args:
        prediction: (X, Y, Z) predicted mask (any dtype; non-zero is foreground).
        reference: (X, Y, Z) reference mask of the same shape.
        spacing: Voxel size in mm per array axis.

    Returns:
        The metrics; Dice 1.0 / HD95 0.0 if both are empty, Dice 0.0 / HD95 = volume diagonal if one is.

    Raises:
        ValueError: The masks are not 3D or differ in shape.
    """
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    _check_shapes(prediction, reference)
    empty_distance = volume_diagonal(reference.shape, spacing)
    box_prediction, box_reference = _mask_box(prediction), _mask_box(reference)
    if box_prediction is None and box_reference is None:
        box = (slice(0, 0),) * 3
    else:
        box = _union_box(box_prediction, box_reference, reference.shape, _MARGIN)
    return _metrics_of_cropped(prediction[box], reference[box], spacing, empty_distance)


def label_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    class_ids: Sequence[int],
    spacing: Sequence[float],
) -> dict[int, ClassMetrics]:
    """Dice and HD95 of every class of two label maps.

    Each class is evaluated on the bounding box of its predicted and reference voxels (plus one voxel), found
    for all classes in one pass over each map, so the cost does not grow with the volume per class.

    Args:
        prediction: (X, Y, Z) integer label map.
        reference: (X, Y, Z) integer label map of the same shape.
        class_ids: Label values to evaluate (positive integers; 0 is background and is not evaluated).
        spacing: Voxel size in mm per array axis.

    Returns:
        Class id -> metrics, in the order of ``class_ids``.

    Raises:
        ValueError: The maps are not 3D, differ in shape, are not integer, or a class id is not positive.
    """
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    _check_shapes(prediction, reference)
    for name, array in (("prediction", prediction), ("reference", reference)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} label map must be an integer array, got {array.dtype}")
    if any(int(c) <= 0 for c in class_ids):
        raise ValueError(f"class ids must be positive (0 is background), got {list(class_ids)}")
    empty_distance = volume_diagonal(reference.shape, spacing)
    largest = max((int(c) for c in class_ids), default=0)
    # find_objects: entry c-1 is the bounding box of value c (None if absent); values <= 0 or > largest are ignored.
    boxes_prediction = ndimage.find_objects(prediction, max_label=largest)
    boxes_reference = ndimage.find_objects(reference, max_label=largest)
    results = {}
    for class_id in (int(c) for c in class_ids):
        box_prediction, box_reference = boxes_prediction[class_id - 1], boxes_reference[class_id - 1]
        if box_prediction is None and box_reference is None:
            empty = np.zeros((0, 0, 0), dtype=bool)
            results[class_id] = _metrics_of_cropped(empty, empty, spacing, empty_distance)
            continue
        box = _union_box(box_prediction, box_reference, reference.shape, _MARGIN)
        results[class_id] = _metrics_of_cropped(
            prediction[box] == class_id, reference[box] == class_id, spacing, empty_distance
        )
    return results


def _check_shapes(prediction: np.ndarray, reference: np.ndarray) -> None:
    if prediction.ndim != 3 or prediction.shape != reference.shape:
        raise ValueError(
            f"prediction and reference must be 3D arrays of one shape, got {prediction.shape} and {reference.shape}"
        )
