"""The MaskSAM training loss (paper §2.7, DESIGN §4): set prediction with a shared Hungarian matching.

Given the matching σ of `HungarianMatcher`, with the DESIGN §4 weights ("loss with the same weights" as the
matching cost, see `LossWeights`):

- classification: 0.2 · cross-entropy over all G·N queries; unmatched queries target "no object" (index K),
  whose class weight is 0.1; averaged with those class weights (PyTorch's weighted mean, as DETR/Mask2Former);
- final masks: 1.5 · BCE + 1.5 · Dice of the matched masks;
- auxiliary masks: 0.5 · BCE + 0.5 · Dice of the prompt generator's matched masks (same σ);
- boxes: 0.5 · L1 (summed over the 4 coordinates) + 0.2 · (1 − GIoU) of the matched learned boxes;
- denoising queries (training only, when the model decoded them): their class and final-mask terms with the
  classification and final-mask weights, each query paired with the segment whose noised box prompted it
  (no matching), normalised by the number of those segments.

Mask terms are read at uncertainty-sampled points (oversample 2, importance 0.75; every pixel when the
points would be as many as the pixels). Mask and box terms are summed over matched pairs and divided by the
number of ground-truth segments in the global batch (all-reduced and averaged over ranks under DDP, at least
1). Everything is computed in float32 whatever the model's dtype or autocast state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F

from masksam.data.targets import SliceTargets
from masksam.model.masksam import MaskSamOutput
from masksam.training.matcher import (
    HungarianMatcher,
    MatchCosts,
    MatchIndices,
    generalized_box_iou,
    prompt_matching,
)
from masksam.training.point_sampling import PointSamplingConfig, read_points, uncertain_points

__all__ = [
    "LossTerms",
    "LossWeights",
    "SetCriterion",
    "generalized_box_iou",
    "number_of_segments",
]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; DESIGN §4 uses the matching-cost weights (`MatchCosts`) for the loss too.

    classification: cross-entropy over the K+1 classes of all queries.
    mask_bce / mask_dice: final masks. aux_mask_bce / aux_mask_dice: auxiliary masks.
    box_l1 / box_giou: L1 and 1 − GIoU of the learned boxes.
    no_object_weight: class weight of "no object" inside the cross-entropy (the other classes weigh 1).
    """

    classification: float = 0.2
    mask_bce: float = 1.5
    mask_dice: float = 1.5
    aux_mask_bce: float = 0.5
    aux_mask_dice: float = 0.5
    box_l1: float = 0.5
    box_giou: float = 0.2
    no_object_weight: float = 0.1

    def matching_costs(self) -> MatchCosts:
        """The same weights as matching costs (DESIGN §4)."""
        return MatchCosts(**{f.name: getattr(self, f.name) for f in fields(MatchCosts)})


@dataclass
class LossTerms:
    """Weighted loss terms (float32 scalars) and their sum `total`, which is what to back-propagate."""

    classification: torch.Tensor
    mask_bce: torch.Tensor
    mask_dice: torch.Tensor
    aux_mask_bce: torch.Tensor
    aux_mask_dice: torch.Tensor
    box_l1: torch.Tensor
    box_giou: torch.Tensor
    denoising_classification: torch.Tensor
    denoising_mask_bce: torch.Tensor
    denoising_mask_dice: torch.Tensor
    total: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Every term by name (``total`` included), detached, for logging."""
        return {f.name: getattr(self, f.name).detach() for f in fields(self)}

    def as_floats(self) -> dict[str, float]:
        """Every term by name (``total`` included) as Python floats, with one device synchronisation."""
        names = [f.name for f in fields(self)]
        values = torch.stack([getattr(self, name).detach() for name in names]).tolist()
        return dict(zip(names, values, strict=True))


def number_of_segments(valid: torch.Tensor, *, synchronise: bool = True) -> torch.Tensor:
    """Ground-truth segments per process: the global count averaged over ranks under DDP, at least 1.

    Args:
        valid: (G, M) bool, real segments of this process's slices.
        synchronise: All-reduce over ranks when torch.distributed is initialised (a collective call: every
            rank must make it); False counts this process's segments only.

    Returns:
        () float32 tensor on `valid`'s device.
    """
    count = valid.sum().float()
    if synchronise and dist.is_available() and dist.is_initialized():
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        count = count / dist.get_world_size()
    return count.clamp(min=1)


class SetCriterion:
    """Matches predictions to segments and computes every weighted loss term.

    Args:
        num_classes: K, classes including background; the class logits have K+1 entries.
        weights: Loss weights (DESIGN §4 defaults).
        sampling: Points of the mask losses.
        matcher: The matcher; by default a `HungarianMatcher` with the loss weights as costs and
            `sampling.num_points` points per slice.
        tolerate_non_finite: The default matcher pairs non-finite outputs instead of raising (fp16 training,
            where GradScaler skips a step that overflowed).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        weights: LossWeights = LossWeights(),
        sampling: PointSamplingConfig = PointSamplingConfig(),
        matcher: HungarianMatcher | None = None,
        tolerate_non_finite: bool = False,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.weights = weights
        self.sampling = sampling
        self.matcher = matcher or HungarianMatcher(
            costs=weights.matching_costs(), num_points=sampling.num_points, tolerate_non_finite=tolerate_non_finite
        )

    def __call__(
        self,
        outputs: MaskSamOutput,
        targets: SliceTargets,
        *,
        indices: MatchIndices | None = None,
        denoising_targets: SliceTargets | None = None,
        generator: torch.Generator | None = None,
        synchronise: bool = True,
    ) -> LossTerms:
        """The loss of a batch.

        Args:
            outputs: class_logits (G, N, K+1), mask_logits and aux_mask_logits (G, N, H, W), aux_boxes (G, N, 4),
                in any float dtype; denoising_class_logits/denoising_mask_logits (G, D, ...) if decoded.
            targets: Padded per-slice targets (G, N, ...) on the outputs' device.
            indices: A matching computed beforehand; matched here if None.
            denoising_targets: (G, D, ...) the segment of each denoising query (``valid`` False: its box was a
                decoy, its target "no object"); needed when the outputs hold denoising queries.
            generator: Random source of the matching and loss points (on the outputs' device).
            synchronise: All-reduce the segment count over ranks under DDP (a collective: pass False where
                ranks may call the criterion different numbers of times, e.g. on uneven validation shards).

        Returns:
            The weighted terms and their total, float32 scalars.

        Raises:
            ValueError: The class logits do not have K+1 entries.
        """
        if outputs.class_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"class logits have {outputs.class_logits.shape[-1]} entries, expected K+1 = {self.num_classes + 1}"
            )
        if indices is None:
            indices = self.matcher(outputs, targets, generator=generator)
        device = outputs.mask_logits.device
        weights = self.weights
        with torch.autocast(device_type=device.type, enabled=False):
            num_segments = number_of_segments(targets.valid, synchronise=synchronise)
            classification = self.classification_loss(outputs.class_logits, targets.class_ids, indices)
            mask_bce, mask_dice = self.mask_losses(
                outputs.mask_logits, targets.masks, indices, num_segments, generator=generator
            )
            aux_mask_bce, aux_mask_dice = self.mask_losses(
                outputs.aux_mask_logits, targets.masks, indices, num_segments, generator=generator
            )
            box_l1, box_giou = self.box_losses(outputs.aux_boxes, targets.boxes, indices, num_segments)
            dn_classification, dn_mask_bce, dn_mask_dice = self.denoising_losses(
                outputs, denoising_targets, generator=generator, synchronise=synchronise
            )
            terms = {
                "classification": weights.classification * classification,
                "mask_bce": weights.mask_bce * mask_bce,
                "mask_dice": weights.mask_dice * mask_dice,
                "aux_mask_bce": weights.aux_mask_bce * aux_mask_bce,
                "aux_mask_dice": weights.aux_mask_dice * aux_mask_dice,
                "box_l1": weights.box_l1 * box_l1,
                "box_giou": weights.box_giou * box_giou,
                "denoising_classification": weights.classification * dn_classification,
                "denoising_mask_bce": weights.mask_bce * dn_mask_bce,
                "denoising_mask_dice": weights.mask_dice * dn_mask_dice,
            }
            return LossTerms(**terms, total=torch.stack(list(terms.values())).sum())

    def denoising_losses(
        self,
        outputs: MaskSamOutput,
        targets: SliceTargets | None,
        *,
        generator: torch.Generator | None = None,
        synchronise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unweighted (classification, mask BCE, mask Dice) of the denoising queries; zeros without them.

        Query j of a slice is paired with segment j of ``targets`` (it was prompted with that segment's noised
        box); decoy queries (invalid segments) only learn "no object".
        """
        zero = outputs.mask_logits.new_zeros((), dtype=torch.float32)
        if outputs.denoising_mask_logits is None:
            return zero, zero, zero
        if targets is None:
            raise ValueError("the outputs hold denoising queries but no denoising targets were given")
        pairs = prompt_matching(targets.valid)
        num_segments = number_of_segments(targets.valid, synchronise=synchronise)
        classification = self.classification_loss(outputs.denoising_class_logits, targets.class_ids, pairs)
        bce, dice = self.mask_losses(
            outputs.denoising_mask_logits, targets.masks, pairs, num_segments, generator=generator
        )
        return classification, bce, dice

    def classification_loss(
        self, class_logits: torch.Tensor, class_ids: torch.Tensor, indices: MatchIndices
    ) -> torch.Tensor:
        """Weighted-mean cross-entropy of all queries; unmatched ones target "no object".

        Args:
            class_logits: (G, N, K+1) logits, index K = "no object".
            class_ids: (G, M) long target classes of the padded segments.
            indices: The matching.

        Returns:
            () unweighted loss.
        """
        num_slices, num_queries, num_outputs = class_logits.shape
        no_object = num_outputs - 1
        query_classes = torch.full((num_slices, num_queries), no_object, dtype=torch.long, device=class_ids.device)
        query_classes[indices.slice_index, indices.prediction_index] = class_ids[
            indices.slice_index, indices.target_index
        ]
        class_weights = torch.ones(num_outputs, device=class_logits.device)
        class_weights[no_object] = self.weights.no_object_weight
        return F.cross_entropy(
            class_logits.float().flatten(0, 1),  # (G*N, K+1)
            query_classes.flatten(),  # (G*N,)
            weight=class_weights,
        )

    def mask_losses(
        self,
        mask_logits: torch.Tensor,
        target_masks: torch.Tensor,
        indices: MatchIndices,
        num_segments: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE and Dice of the matched masks at uncertainty-sampled points, summed and normalised.

        Args:
            mask_logits: (G, N, H, W) predicted logits (final or auxiliary).
            target_masks: (G, M, H, W) bool target masks.
            indices: The matching.
            num_segments: () normaliser.
            generator: Random source of the points.

        Returns:
            Unweighted () BCE and Dice losses.
        """
        logits = mask_logits[indices.slice_index, indices.prediction_index].float()  # (pairs, H, W)
        matched_targets = target_masks[indices.slice_index, indices.target_index].float()  # (pairs, H, W)
        points = uncertain_points(logits, self.sampling, generator=generator)  # (pairs, P, 2) or None
        logit_points = read_points(logits[:, None], points)[:, 0]  # (pairs, P)
        target_points = read_points(matched_targets[:, None], points)[:, 0]  # (pairs, P)
        bce = F.binary_cross_entropy_with_logits(logit_points, target_points, reduction="none").mean(1)
        probs = logit_points.sigmoid()
        dice = 1 - (2 * (probs * target_points).sum(1) + 1) / (probs.sum(1) + target_points.sum(1) + 1)
        return bce.sum() / num_segments, dice.sum() / num_segments

    def box_losses(
        self,
        boxes: torch.Tensor,
        target_boxes: torch.Tensor,
        indices: MatchIndices,
        num_segments: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L1 (summed over coordinates) and 1 − GIoU of the matched learned boxes, summed and normalised.

        Args:
            boxes: (G, N, 4) predicted normalised xyxy boxes.
            target_boxes: (G, M, 4) target boxes.
            indices: The matching.
            num_segments: () normaliser.

        Returns:
            Unweighted () L1 and GIoU losses.
        """
        predicted = boxes[indices.slice_index, indices.prediction_index].float()  # (pairs, 4)
        matched = target_boxes[indices.slice_index, indices.target_index].float()  # (pairs, 4)
        l1 = (predicted - matched).abs().sum(1)
        giou = 1 - generalized_box_iou(predicted, matched)
        return l1.sum() / num_segments, giou.sum() / num_segments
