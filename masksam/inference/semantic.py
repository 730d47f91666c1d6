"""MaskFormer semantic inference: per-query class probabilities times per-query masks, summed over queries.

For every pixel and class k < K::

    score[k] = Σ_q softmax(class_logits[q])[k] · sigmoid(mask_logits[q])

The "no object" probability (index K) is dropped, so a query the model calls "no object" contributes nothing.
Scores are not normalised over classes (a pixel no query covers has small scores everywhere); the argmax over
k is the label. In ground-truth prompt mode each query's class is known from its prompt instead, and where
prompted masks overlap the smaller box is in front (:func:`prompted_semantic_scores`).

A model trained without background segments (``include_background=False``) never learns class 0, so its
background score is replaced by ``1 - max_k score[k]`` over the foreground classes: a pixel is foreground when
some foreground class scores above one half (and above the others), background otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_scores(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, *, include_background: bool = True
) -> torch.Tensor:
    """Per-pixel class scores from a set of (class, mask) predictions.

    Args:
        class_logits: (G, N, K+1) class logits per slice and query; index K is "no object".
        mask_logits: (G, N, H, W) mask logits per slice and query.
        include_background: The model predicts background segments (class 0); if False, class 0's score is
            ``1 - max`` of the foreground scores (see module docstring).

    Returns:
        (G, K, H, W) float32 class scores in [0, N].
    """
    probabilities = class_logits.float().softmax(dim=-1)[..., :-1]  # (G, N, K)
    return class_weighted_masks(probabilities, mask_logits, include_background=include_background)


def prompted_semantic_scores(
    prompt_class_ids: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    num_classes: int,
    include_background: bool = True,
    prompt_boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class scores when each query's class is its prompt's (ground-truth prompt mode).

    The paper's "GT bbox" rows take the semantic labels from the ground-truth prompts, not from the class head:
    query i was prompted with the box of segment i, so its mask belongs to that segment's class. With
    ``prompt_boxes``, overlaps go to the smaller box (:func:`smaller_boxes_in_front`): SAM fills the box of a
    ring (the myocardium) as a disc over what it encloses (the cavity), whose own, smaller box is the more
    specific prompt, as in the box-prompted baseline.

    Args:
        prompt_class_ids: (G, N) long class of each query's prompt; K ("no object") for padding queries.
        mask_logits: (G, N, H, W) mask logits per slice and query.
        num_classes: K.
        include_background: As in :func:`semantic_scores`.
        prompt_boxes: (G, N, 4) normalised xyxy boxes that prompted the queries.

    Returns:
        (G, K, H, W) float32 class scores.
    """
    probabilities = F.one_hot(prompt_class_ids.long(), num_classes + 1)[..., :-1].float()  # (G, N, K)
    masks = mask_logits.float().sigmoid()  # (G, N, H, W)
    if prompt_boxes is not None:
        masks = smaller_boxes_in_front(masks, prompt_boxes, prompt_class_ids < num_classes)
    return class_weighted_probabilities(probabilities, masks, include_background=include_background)


def smaller_boxes_in_front(masks: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """What each query's mask keeps when the queries with smaller boxes lie in front of it.

    visible[q] = masks[q] · Π over valid queries p with a smaller box (ties: lower index) of (1 - masks[p]):
    a soft painting order, largest box first, that keeps scores probabilities (folds and mirrorings average).

    Args:
        masks: (G, N, H, W) mask probabilities.
        boxes: (G, N, 4) xyxy boxes.
        valid: (G, N) bool; invalid queries occlude nothing.

    Returns:
        (G, N, H, W) visible mask probabilities.
    """
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)  # (G, N)
    area = torch.where(valid, area.float(), torch.inf)
    index = torch.arange(area.shape[1], device=area.device)
    smaller = area[:, None, :] < area[:, :, None]  # (G, N, P): p smaller than q
    tied_before = (area[:, None, :] == area[:, :, None]) & (index[None, :] < index[:, None])[None]
    in_front = (smaller | tied_before) & valid[:, None, :]  # (G, N, P)
    log_clear = torch.log1p(-masks.clamp(max=1.0 - 1e-6))  # (G, P, H, W) log(1 - mask)
    occlusion = torch.einsum("gnp,gphw->gnhw", in_front.float(), log_clear).exp()  # (G, N, H, W)
    return masks * occlusion


def query_scores(output, prompt_targets=None, *, num_classes: int, include_background: bool = True) -> torch.Tensor:
    """(G, K, H, W) float32 semantic scores of a MaskSAM output (``class_logits``, ``mask_logits``).

    With ``prompt_targets`` (the ``SliceTargets`` whose boxes prompted a ground-truth prompt mode model) each
    query takes the class of its prompt; otherwise the class head's probabilities.
    """
    if prompt_targets is None:
        return semantic_scores(output.class_logits, output.mask_logits, include_background=include_background)
    return prompted_semantic_scores(
        prompt_targets.class_ids,
        output.mask_logits,
        num_classes=num_classes,
        include_background=include_background,
        prompt_boxes=prompt_targets.boxes,
    )


def class_weighted_masks(
    probabilities: torch.Tensor, mask_logits: torch.Tensor, *, include_background: bool = True
) -> torch.Tensor:
    """score[k] = Σ_q probabilities[q, k] · sigmoid(mask_logits[q]): (G, N, K) and (G, N, H, W) -> (G, K, H, W)."""
    return class_weighted_probabilities(
        probabilities, mask_logits.float().sigmoid(), include_background=include_background
    )


def class_weighted_probabilities(
    probabilities: torch.Tensor, masks: torch.Tensor, *, include_background: bool = True
) -> torch.Tensor:
    """score[k] = Σ_q probabilities[q, k] · masks[q] for mask probabilities (G, N, H, W) -> (G, K, H, W)."""
    scores = torch.einsum("gnk,gnhw->gkhw", probabilities, masks)  # (G, K, H, W)
    if not include_background:
        foreground = scores[:, 1:].amax(dim=1)  # (G, H, W)
        scores[:, 0] = 1.0 - foreground
    return scores
