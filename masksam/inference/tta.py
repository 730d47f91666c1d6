"""Mirroring test-time augmentation: score every mirrored copy of a patch, mirror the scores back, average.

Mirrored over the in-plane axes H and W (4 copies), and optionally also over the through-plane axis T
(8 copies). Each copy has weight exactly ``1 / copies``. Copies run one after the other, so a batch of windows
never grows beyond ``windows_per_batch`` patches.
"""

from __future__ import annotations

from itertools import combinations

import torch

from masksam.inference.sliding_window import ScoreFunction

# Axes of a (B, C, T, H, W) patch and of its (B, K, T, H, W) scores.
DEPTH_AXIS, HEIGHT_AXIS, WIDTH_AXIS = 2, 3, 4


def mirror_axes(*, mirror_depth: bool = False) -> tuple[int, ...]:
    """Patch axes to mirror: (H, W), plus T when ``mirror_depth``."""
    return (DEPTH_AXIS, HEIGHT_AXIS, WIDTH_AXIS) if mirror_depth else (HEIGHT_AXIS, WIDTH_AXIS)


def mirror_combinations(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the identity (empty tuple) first: ``2 ** len(axes)`` flips."""
    return [subset for size in range(len(axes) + 1) for subset in combinations(axes, size)]


def with_mirroring(score_function: ScoreFunction, axes: tuple[int, ...]) -> ScoreFunction:
    """Wraps a score function so it averages over all mirrored copies of its input.

    Args:
        score_function: (B, C, T, H, W) patches -> (B, K, T, H, W) scores.
        axes: Axes to mirror (see :func:`mirror_axes`); empty for no augmentation.

    Returns:
        A score function with the same signature returning the mean over ``2 ** len(axes)`` copies.
    """
    flips = mirror_combinations(axes)
    if len(flips) == 1:
        return score_function

    def mirrored(patches: torch.Tensor) -> torch.Tensor:
        total = None
        for flip in flips:
            copy = patches.flip(flip) if flip else patches
            scores = score_function(copy).float()  # (B, K, T, H, W), mirrored like `copy`
            scores = scores.flip(flip) if flip else scores
            total = scores if total is None else total + scores  # out of place: `scores` may alias the input
        return total / len(flips)

    return mirrored
