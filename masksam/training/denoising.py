"""Prompt denoising queries (DN-DETR, MP-Former): training-only queries prompted with noised ground truth.

Every class of a slice gets ``groups`` extra queries (one per group) prompted with its ground-truth box, each
edge moved by up to ``box_jitter`` of the box's side (MedSAM's jitter), and, where the model uses mask prompts,
with its ground-truth mask as logits ±``MASK_PROMPT_LOGIT`` with a share ``mask_flip`` of the pixels flipped. A class
absent from the slice gets a random decoy box instead, with an empty mask, and learns "no object". These
queries are decoded beside the normal ones and trained directly against their segment and class (no
matching), so the decoder's adapters and the class head learn from good prompts from the first step while the
prompt generator is still poor. Inference never uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from masksam.data.targets import SliceTargets
from masksam.model.masksam import DenoisingPrompts, per_query
from masksam.model.refinement import MASK_PROMPT_LOGIT

# Side range of the decoy boxes of absent classes, as a share of the image.
DECOY_SIDE = (0.05, 0.5)


@dataclass(frozen=True)
class DenoisingSettings:
    """groups: copies of every class's noised prompt per slice (0: off); box_jitter: largest edge move as a
    share of the box side; mask_flip: share of mask-prompt pixels flipped."""

    groups: int = 1
    box_jitter: float = 0.05
    mask_flip: float = 0.05


def jitter_boxes(boxes: torch.Tensor, jitter: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(..., 4) normalised xyxy -> each edge moved by U(-jitter, jitter) × the box's side, kept inside [0, 1]."""
    sides = (boxes[..., 2:] - boxes[..., :2]).repeat(*([1] * (boxes.dim() - 1)), 2)  # (..., 4) as w, h, w, h
    moves = (torch.rand(boxes.shape, generator=generator, device=boxes.device) * 2 - 1) * jitter * sides
    moved = (boxes + moves).clamp(0.0, 1.0)
    start = torch.minimum(moved[..., :2], moved[..., 2:])
    end = torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([start, end], dim=-1)


def decoy_boxes(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(*shape, 4) random normalised xyxy boxes (centre anywhere, sides in ``DECOY_SIDE``)."""
    centre = torch.rand((*shape, 2), generator=generator, device=device)
    low, high = DECOY_SIDE
    half = (low + (high - low) * torch.rand((*shape, 2), generator=generator, device=device)) / 2
    return torch.cat([centre - half, centre + half], dim=-1).clamp(0.0, 1.0)


def noised_mask_logits(
    masks: torch.Tensor, size: int, flip: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(..., H, W) bool masks -> (..., size, size) logits ±MASK_PROMPT_LOGIT with a share ``flip`` of pixels flipped."""
    lead = masks.shape[:-2]
    resized = F.interpolate(masks.reshape(-1, 1, *masks.shape[-2:]).float(), size=(size, size), mode="nearest")
    resized = resized.reshape(*lead, size, size) > 0.5
    flipped = torch.rand(resized.shape, generator=generator, device=masks.device) < flip
    return torch.where(resized ^ flipped, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT)


def denoising_queries(
    targets: SliceTargets,
    *,
    num_slices: int,
    settings: DenoisingSettings,
    mask_size: int | None,
    slots: bool,
    generator: torch.Generator | None = None,
) -> tuple[DenoisingPrompts, SliceTargets]:
    """The denoising prompts of a batch and the segment each one answers for.

    Args:
        targets: Class-slot targets (``build_class_slot_targets``), (G, C, ...) with G = B*T slices.
        num_slices: T, slices per patch.
        settings: Groups and noise.
        mask_size: S, side of the mask prompts, or None when the model takes no mask prompt.
        slots: Denoising query j borrows the classifier tokens of class slot j (class-slot queries).
        generator: Random source of the noise.

    Returns:
        (prompts with D = groups × C queries, their targets (G, D, ...)).
    """
    groups = settings.groups
    repeated = SliceTargets(
        class_ids=targets.class_ids.repeat(1, groups),
        masks=targets.masks.repeat(1, groups, 1, 1),
        boxes=targets.boxes.repeat(1, groups, 1),
        valid=targets.valid.repeat(1, groups),
    )  # (G, D, ...)
    device = repeated.boxes.device
    jittered = jitter_boxes(repeated.boxes, settings.box_jitter, generator)
    decoys = decoy_boxes(tuple(repeated.valid.shape), generator, device)
    boxes = torch.where(repeated.valid[..., None], jittered, decoys)  # (G, D, 4)
    masks = None
    if mask_size is not None:
        masks = noised_mask_logits(repeated.masks, mask_size, settings.mask_flip, generator)  # (G, D, S, S)
        masks = per_query(masks, num_slices)
    count = targets.valid.shape[1]
    prompts = DenoisingPrompts(
        boxes=per_query(boxes, num_slices),
        masks=masks,
        slots=torch.arange(count, device=device).repeat(groups) if slots else None,
    )
    return prompts, repeated
