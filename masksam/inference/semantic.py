"""MaskFormer semantic inference: per-query class probabilities times per-query masks, summed over queries.

For every pixel and class k < K::

    score[k] = Σ_q softmax(class_logits[q])[k] · sigmoid(mask_logits[q])

The "no object" probability (index K) is dropped, so a query the model calls "no object" contributes nothing.
Scores are not normalised over classes (a pixel no query covers has small scores everywhere); the argmax over
k is the label.

A model trained without background segments (``include_background=False``) never learns class 0, so its
background score is replaced by ``1 - max_k score[k]`` over the foreground classes: a pixel is foreground when
some foreground class scores above one half (and above the others), background otherwise.
"""

from __future__ import annotations

import torch


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
    masks = mask_logits.float().sigmoid()  # (G, N, H, W)
    scores = torch.einsum("gnk,gnhw->gkhw", probabilities, masks)  # (G, K, H, W)
    if not include_background:
        foreground = scores[:, 1:].amax(dim=1)  # (G, H, W)
        scores[:, 0] = 1.0 - foreground
    return scores
