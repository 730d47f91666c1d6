"""Hungarian matching of the N predictions of each slice to its ground-truth segments (paper §2.7, DESIGN §4).

Cost of assigning prediction i to segment j (DESIGN §4 weights by default, see `MatchCosts`):

    0.2·(−p_i[c_j]) + 1.5·BCE(m_i, m_j) + 1.5·Dice(m_i, m_j)            final masks and classes
    + 0.5·(BCE(a_i, m_j) + Dice(a_i, m_j))                               auxiliary masks
    + 0.5·L1(b_i, b_j) + 0.2·(−GIoU(b_i, b_j))                           auxiliary (learned) boxes

The auxiliary and final predictions are matched jointly and share one assignment (paper §2.7). Mask terms are
read at one random point set per slice (`point_sampling`); the cost of every slice is one batched (G, N, N)
tensor computation in float32 without autograd, then `scipy.optimize.linear_sum_assignment` runs per slice on
the columns of that slice's real segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from masksam.data.targets import SliceTargets
from masksam.model.masksam import MaskSamOutput
from masksam.training.point_sampling import matching_points, read_points

# What a non-finite cost counts as when tolerated: far above any real cost (a few units), far below overflow.
_NON_FINITE_COST = 1e9


@dataclass(frozen=True)
class MatchCosts:
    """Weights of the matching cost terms (DESIGN §4).

    classification: weight of −p[class] (probability of the segment's class, softmax over K+1).
    mask_bce / mask_dice: final mask binary cross-entropy and Dice.
    aux_mask_bce / aux_mask_dice: auxiliary (prompt generator) mask binary cross-entropy and Dice.
    box_l1 / box_giou: L1 distance (summed over the 4 coordinates) and −GIoU of the learned boxes.
    """

    classification: float = 0.2
    mask_bce: float = 1.5
    mask_dice: float = 1.5
    aux_mask_bce: float = 0.5
    aux_mask_dice: float = 0.5
    box_l1: float = 0.5
    box_giou: float = 0.2


@dataclass
class MatchIndices:
    """Matched (prediction, segment) pairs of all slices, sorted by slice then prediction.

    Gather with ``outputs.mask_logits[m.slice_index, m.prediction_index]`` and
    ``targets.masks[m.slice_index, m.target_index]``. Unmatched predictions are "no object".

    Attributes:
        slice_index: (M,) long, slice g of each pair (0..G-1).
        prediction_index: (M,) long, query i (0..N-1).
        target_index: (M,) long, index j of the segment in the slice's padded target set.
    """

    slice_index: torch.Tensor
    prediction_index: torch.Tensor
    target_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.slice_index.numel())


def prompt_matching(valid: torch.Tensor) -> MatchIndices:
    """Ground-truth prompt mode: query i was prompted with segment i's box, so it is matched to segment i.

    Args:
        valid: (G, N) bool, the real (not padding) segments of each slice's padded target set.

    Returns:
        The pairs (g, i, i) of every valid slot, sorted by slice then query.
    """
    slice_index, query_index = valid.nonzero(as_tuple=True)  # row-major: sorted by slice, then query
    return MatchIndices(slice_index=slice_index, prediction_index=query_index, target_index=query_index.clone())


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalised IoU of xyxy boxes, element-wise with broadcasting (pairwise: ``b1[:, None]``, ``b2[None]``).

    Degenerate boxes (zero width or height, or inverted, which count as empty) give finite values: areas are
    clamped below by `eps` where they divide, so two identical points have GIoU 0 rather than NaN.

    Args:
        boxes1: (..., 4) boxes (x1, y1, x2, y2).
        boxes2: (..., 4) boxes, broadcastable with `boxes1`.
        eps: Smallest divisor.

    Returns:
        (...) GIoU in [−1, 1]; 1 for identical non-empty boxes.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    inner_low = torch.maximum(boxes1[..., :2], boxes2[..., :2])  # (..., 2)
    inner_high = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inner = (inner_high - inner_low).clamp(min=0)
    intersection = inner[..., 0] * inner[..., 1]
    union = area1 + area2 - intersection
    iou = intersection / union.clamp(min=eps)
    outer_low = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    outer_high = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    outer = (outer_high - outer_low).clamp(min=0)
    enclosing = outer[..., 0] * outer[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target, over points.

    Args:
        logits: (G, N, P) predicted mask logits at P points.
        targets: (G, M, P) target values in [0, 1] at the same points.

    Returns:
        (G, N, M) cost.
    """
    positive = F.softplus(-logits)  # −log σ(x), the loss where the target is 1
    negative = F.softplus(logits)  # −log(1 − σ(x)), the loss where the target is 0
    cost = torch.einsum("gnp,gmp->gnm", positive, targets) + torch.einsum("gnp,gmp->gnm", negative, 1 - targets)
    return cost / logits.shape[-1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 − (2|p·t| + 1) / (|p| + |t| + 1) of every prediction against every target.

    Args:
        logits: (G, N, P) predicted mask logits at P points.
        targets: (G, M, P) target values in [0, 1] at the same points.

    Returns:
        (G, N, M) cost.
    """
    probs = logits.sigmoid()
    overlap = 2 * torch.einsum("gnp,gmp->gnm", probs, targets)
    sizes = probs.sum(-1)[:, :, None] + targets.sum(-1)[:, None, :]  # (G, N, M)
    return 1 - (overlap + 1) / (sizes + 1)


class HungarianMatcher:
    """Per-slice one-to-one assignment of predictions to ground-truth segments at minimum cost.

    Args:
        costs: Weights of the cost terms.
        num_points: P, random points per slice at which masks are compared; every pixel when P ≥ H·W.
        tolerate_non_finite: Pair predictions whose cost is not finite (NaN or infinite outputs) as if it were
            the largest finite cost, instead of raising. For fp16 training: an overflow is expected now and then,
            its loss is not finite, and GradScaler skips the step and lowers the scale.
    """

    def __init__(
        self, *, costs: MatchCosts = MatchCosts(), num_points: int = 112 * 112, tolerate_non_finite: bool = False
    ) -> None:
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.costs = costs
        self.num_points = num_points
        self.tolerate_non_finite = tolerate_non_finite

    def cost_matrix(
        self, outputs: MaskSamOutput, targets: SliceTargets, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The matching cost of every prediction against every (also padding) target of every slice.

        Args:
            outputs: Model predictions: class_logits (G, N, K+1), mask_logits and aux_mask_logits (G, N, H, W),
                aux_boxes (G, N, 4); any float dtype.
            targets: Targets on the same device: class_ids (G, M), masks (G, M, H, W), boxes (G, M, 4).
            generator: Random source for the points (on the outputs' device); the global one if None.

        Returns:
            (G, N, M) float32 cost; columns of padding targets are finite but meaningless.
        """
        mask_logits = outputs.mask_logits
        num_slices, num_queries, height, width = mask_logits.shape
        if targets.masks.shape[-2:] != (height, width) or outputs.aux_mask_logits.shape != mask_logits.shape:
            raise ValueError(
                f"masks differ in size: final {tuple(mask_logits.shape)}, auxiliary "
                f"{tuple(outputs.aux_mask_logits.shape)}, targets {tuple(targets.masks.shape)}"
            )
        device = mask_logits.device
        weights = self.costs
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            probs = outputs.class_logits.float().softmax(-1)  # (G, N, K+1)
            target_classes = targets.class_ids[:, None, :].expand(-1, num_queries, -1)  # (G, N, M)
            class_cost = -torch.gather(probs, 2, target_classes)  # (G, N, M)

            points = matching_points(num_slices, height, width, self.num_points, device=device, generator=generator)
            target_points = read_points(targets.masks.float(), points)  # (G, M, P)
            final_points = read_points(mask_logits.float(), points)  # (G, N, P)
            aux_points = read_points(outputs.aux_mask_logits.float(), points)  # (G, N, P)

            predicted_boxes = outputs.aux_boxes.float()[:, :, None, :]  # (G, N, 1, 4)
            target_boxes = targets.boxes.float()[:, None, :, :]  # (G, 1, M, 4)
            l1_cost = (predicted_boxes - target_boxes).abs().sum(-1)  # (G, N, M)
            giou_cost = -generalized_box_iou(predicted_boxes, target_boxes)  # (G, N, M)

            return (
                weights.classification * class_cost
                + weights.mask_bce * pairwise_sigmoid_bce(final_points, target_points)
                + weights.mask_dice * pairwise_dice(final_points, target_points)
                + weights.aux_mask_bce * pairwise_sigmoid_bce(aux_points, target_points)
                + weights.aux_mask_dice * pairwise_dice(aux_points, target_points)
                + weights.box_l1 * l1_cost
                + weights.box_giou * giou_cost
            )

    def __call__(
        self, outputs: MaskSamOutput, targets: SliceTargets, *, generator: torch.Generator | None = None
    ) -> MatchIndices:
        """Matches the predictions of every slice to that slice's real segments (`targets.valid`).

        Args:
            outputs: Model predictions, see `cost_matrix`.
            targets: Padded per-slice targets; at most N valid segments per slice.
            generator: Random source for the points (on the outputs' device).

        Returns:
            The matched pairs, on the outputs' device; a slice without segments contributes none.

        Raises:
            ValueError: A slice has more segments than queries, or the cost is not finite (NaN/inf outputs) and
                ``tolerate_non_finite`` is off.
        """
        cost = self.cost_matrix(outputs, targets, generator=generator).cpu().numpy()  # (G, N, M)
        valid = targets.valid.cpu().numpy()  # (G, M)
        num_queries = cost.shape[1]
        if valid.size and int(valid.sum(1).max()) > num_queries:
            raise ValueError(f"a slice has {int(valid.sum(1).max())} segments but only {num_queries} queries")
        if not np.isfinite(cost).all():
            if not self.tolerate_non_finite:
                raise ValueError("the matching cost is not finite: the model produced NaN or infinite outputs")
            # Any pairing will do: the step's loss is not finite either, and GradScaler skips it.
            cost = np.nan_to_num(cost, nan=_NON_FINITE_COST, posinf=_NON_FINITE_COST, neginf=-_NON_FINITE_COST)
        pairs = []  # (3, M_g) int64 arrays: slice, prediction, target
        for slice_index, (slice_cost, slice_valid) in enumerate(zip(cost, valid, strict=True)):
            columns = np.flatnonzero(slice_valid)
            if columns.size == 0:
                continue
            rows, picked = linear_sum_assignment(slice_cost[:, columns])
            pairs.append(np.stack([np.full_like(rows, slice_index), rows, columns[picked]]).astype(np.int64))
        flat = np.concatenate(pairs, axis=1) if pairs else np.zeros((3, 0), dtype=np.int64)  # (3, M)
        indices = torch.from_numpy(flat).to(outputs.mask_logits.device)
        return MatchIndices(slice_index=indices[0], prediction_index=indices[1], target_index=indices[2])
