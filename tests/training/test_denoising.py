"""Denoising queries: noised prompts stay valid and near their segment, decoys learn "no object", and the
criterion pairs each denoising query with its own segment (no matching)."""

from __future__ import annotations

import torch

from masksam.data.targets import build_class_slot_targets
from masksam.model.refinement import MASK_PROMPT_LOGIT
from masksam.training.criterion import SetCriterion
from masksam.training.denoising import (
    DenoisingSettings,
    decoy_boxes,
    denoising_queries,
    jitter_boxes,
    noised_mask_logits,
)
from masksam.training.matcher import prompt_matching
from masksam.training.point_sampling import PointSamplingConfig


def _labels() -> torch.Tensor:
    labels = torch.zeros(2, 2, 16, 16, dtype=torch.long)  # (B, T, H, W)
    labels[:, :, 2:8, 3:9] = 1
    labels[0, 1, 10:14, 10:15] = 2  # class 2 only in patch 0, slice 1
    return labels


def test_jittered_boxes_stay_ordered_inside_and_within_the_jitter() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0.2, 0.3, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0], [0.9, 0.9, 1.0, 1.0]]).repeat(100, 1)
    moved = jitter_boxes(boxes, 0.1, generator)
    assert (moved >= 0).all() and (moved <= 1).all()
    assert (moved[:, 2:] >= moved[:, :2]).all()
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    assert ((moved - boxes).abs() <= 0.1 * sides + 1e-6).all()
    assert not torch.equal(moved, boxes)


def test_decoys_are_valid_boxes() -> None:
    decoys = decoy_boxes((50, 3), torch.Generator().manual_seed(1), torch.device("cpu"))
    assert decoys.shape == (50, 3, 4)
    assert (decoys >= 0).all() and (decoys <= 1).all() and (decoys[..., 2:] > decoys[..., :2]).all()


def test_noised_masks_flip_the_asked_share() -> None:
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    clean = noised_mask_logits(masks, 32, 0.0)
    assert torch.equal(clean > 0, masks) and clean.abs().eq(MASK_PROMPT_LOGIT).all()
    noisy = noised_mask_logits(masks, 32, 0.1, torch.Generator().manual_seed(0))
    flipped = ((noisy > 0) != masks).float().mean()
    assert 0.07 < flipped < 0.13


def test_denoising_queries_follow_the_class_slots() -> None:
    labels = _labels()
    targets = build_class_slot_targets(labels, num_classes=3, include_background=False)  # slots: classes 1, 2
    prompts, answered = denoising_queries(
        targets,
        num_slices=2,
        settings=DenoisingSettings(groups=2, box_jitter=0.05, mask_flip=0.0),
        mask_size=8,
        slots=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert prompts.boxes.shape == (2, 4, 2, 4)  # (B, D = groups × slots, T, 4)
    assert prompts.masks.shape == (2, 4, 2, 8, 8)
    assert prompts.slots.tolist() == [0, 1, 0, 1]
    assert answered.class_ids.tolist()[1] == [1, 2, 1, 2]  # patch 0, slice 1 holds both classes
    assert answered.class_ids.tolist()[0] == [1, 3, 1, 3]  # class 2 absent: "no object" (K = 3)
    # A present class's prompt is its jittered box: patch 0, slice 1, query 1 (class 2) near its true box.
    true_box = targets.boxes[1, 1]
    assert (prompts.boxes[0, 1, 1] - true_box).abs().max() <= 0.05 + 1e-6
    assert not prompts.masks[0, 1, 0].gt(0).any()  # an absent class's mask prompt is empty
    unslotted, _ = denoising_queries(targets, num_slices=2, settings=DenoisingSettings(), mask_size=None, slots=False)
    assert unslotted.slots is None and unslotted.masks is None


def test_criterion_pairs_each_denoising_query_with_its_own_segment() -> None:
    """A denoising query whose mask is exactly its segment and whose class is right costs (almost) nothing;
    swapping two queries' outputs costs a lot: no matching rescues them."""
    from masksam.model.masksam import MaskSamOutput

    labels = _labels()
    targets = build_class_slot_targets(labels, num_classes=3, include_background=False)  # (G=4, 2, ...)
    masks = torch.where(targets.masks, 20.0, -20.0)  # (G, 2, H, W) perfect logits
    classes = torch.full((4, 2, 4), -20.0)
    classes.scatter_(2, targets.class_ids[..., None], 20.0)  # perfect class logits, "no object" for decoys
    base = MaskSamOutput(
        class_logits=classes.clone(),
        mask_logits=masks.clone(),
        aux_mask_logits=masks.clone(),
        aux_boxes=targets.boxes.clone(),
        prompt_boxes=targets.boxes.clone(),
    )
    criterion = SetCriterion(num_classes=3, sampling=PointSamplingConfig(num_points=256 * 4))
    indices = prompt_matching(targets.valid)

    def with_denoising(dn_classes, dn_masks):
        base.denoising_class_logits, base.denoising_mask_logits = dn_classes, dn_masks
        return criterion(base, targets, indices=indices, denoising_targets=targets)

    right = with_denoising(classes, masks)
    swapped = with_denoising(classes.flip(1), masks.flip(1))
    for name in ("denoising_classification", "denoising_mask_bce", "denoising_mask_dice"):
        assert getattr(right, name) < 0.01, name
        assert getattr(swapped, name) > 10 * getattr(right, name) + 0.1, name
