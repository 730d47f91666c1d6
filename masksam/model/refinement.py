"""Prompt refinement: a second decoder pass prompted with the first pass's own masks (inference only).

The prompt generator's auxiliary masks are coarse, and a coarse box costs the decoder most of its Dice (the same
decoder, prompted with ground-truth boxes, does far better). The first pass's *final* masks are sharper than the
auxiliary masks they came from. So each query whose first-pass segment is not empty is decoded once more,
prompted as the training's denoising queries were: the box of its segment's largest connected component and
its segment as a mask prompt of ±``MASK_PROMPT_LOGIT`` (a clean ground-truth-like mask). SAM's own interactive
use refines a mask the same way, from its previous prediction. The image is not encoded again.

A query's segment is where its foreground score, max_k p(k) · sigmoid(mask) over the foreground classes k, beats
every other query's and exceeds one half: the pixels the semantic map would give that query, so the segments do
not overlap, as ground-truth masks do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from masksam.model.prompt_generator import mask_to_box

# Magnitude of the logits of a clean (ground-truth-like) mask prompt: the denoising queries' masks in training
# and the refinement pass's masks at inference. SAM's own mask inputs are logits.
MASK_PROMPT_LOGIT = 4.0


def query_segments(class_logits: torch.Tensor, mask_logits: torch.Tensor, *, include_background: bool) -> torch.Tensor:
    """The pixels the semantic map gives each query.

    Args:
        class_logits: (G, N, K+1) per slice and query; index K is "no object".
        mask_logits: (G, N, H, W).
        include_background: Class 0 is a segment class (a background query's segment is never refined).

    Returns:
        (G, N, H, W) bool, at most one query per pixel.
    """
    probabilities = class_logits.float().softmax(dim=-1)[..., :-1]  # (G, N, K)
    if include_background:
        probabilities = probabilities[..., 1:]  # foreground classes only
    foreground = probabilities.amax(dim=-1)  # (G, N)
    scores = foreground[..., None, None] * mask_logits.float().sigmoid()  # (G, N, H, W)
    best = scores.argmax(dim=1, keepdim=True)  # (G, 1, H, W)
    owner = torch.arange(scores.shape[1], device=scores.device).view(1, -1, 1, 1) == best
    return owner & (scores > 0.5)


def segment_prompts(
    segments: torch.Tensor, mask_size: int | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Box and mask prompts of segments, as the denoising queries' prompts (without noise).

    Args:
        segments: (G, N, H, W) bool.
        mask_size: S, the side of the model's mask prompts, or None when it takes none.

    Returns:
        boxes (G, N, 4) normalised xyxy of each segment's largest connected component, mask prompts
        (G, N, S, S) logits ±MASK_PROMPT_LOGIT (None without ``mask_size``), and (G, N) bool: the segment is not
        empty.
    """
    boxes, nonempty = mask_to_box(segments.float(), 0.5, largest_component=True)
    if mask_size is None:
        return boxes, None, nonempty
    resized = segments.float()
    if tuple(resized.shape[-2:]) != (mask_size, mask_size):
        resized = F.interpolate(resized, size=(mask_size, mask_size), mode="nearest")
    masks = torch.where(resized > 0.5, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT)  # (G, N, S, S)
    return boxes, masks, nonempty
