"""Sliding-window inference over a (C, T, H, W) volume with Gaussian importance weighting (nnU-Net's scheme).

Windows of the patch size tile the volume: along each axis they start evenly spaced, at most
``step · patch`` apart, the first at 0 and the last at ``size - patch`` (:func:`window_starts`). A volume
smaller than the patch along an axis is padded with its darkest value (centred) to the patch and the result
cropped back. Every window's class scores are weighted by a Gaussian that is 1 at the patch centre and small
but positive at its border (:func:`gaussian_importance_map`), so a voxel's score is the weighted mean of the
windows covering it::

    score(v) = Σ_w g(v - start_w) · s_w(v) / Σ_w g(v - start_w)

Bounded memory: windows run in through-plane order, and rows (slices) that no later window touches are
normalised and handed out at once (:func:`stream_scores`). The accumulator therefore spans one patch depth
plus the slices between the first and last window of a batch — (K, ~T_patch, H, W) float32 — not the whole
volume: for a 250-slice, 410×410 CT grid with 16 classes and an 8-slice patch, ~130 MB instead of 2.7 GB.
:func:`sliding_window_scores` collects the slabs into the full (K, T, H, W) map when it is wanted (tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

# (B, C, T, H, W) patches -> (B, K, T, H, W) float32 class scores.
ScoreFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SlidingWindowConfig:
    """How a volume is tiled.

    Attributes:
        patch_size: (T, H, W) window, the model's input patch.
        step: Largest distance between window starts as a fraction of the patch (0.5: half-overlapping).
        windows_per_batch: Windows stacked into one call of the score function.
        sigma_scale: Gaussian sigma as a fraction of the patch (1/8 as nnU-Net).
    """

    patch_size: tuple[int, int, int]
    step: float = 0.5
    windows_per_batch: int = 1
    sigma_scale: float = 1.0 / 8.0

    def __post_init__(self) -> None:
        if not 0 < self.step <= 1:
            raise ValueError(f"step must be in (0, 1], got {self.step}")
        if self.windows_per_batch < 1:
            raise ValueError(f"windows_per_batch must be at least 1, got {self.windows_per_batch}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive sizes, got {self.patch_size}")


@dataclass
class ScoreSlab:
    """Finished class scores of consecutive slices.

    Attributes:
        start: Index of the first slice along T (in the volume given to :func:`stream_scores`).
        scores: (K, rows, H, W) float32 weighted-mean scores of slices ``start .. start + rows - 1``.
    """

    start: int
    scores: torch.Tensor

    @property
    def stop(self) -> int:
        """One past the last slice."""
        return self.start + self.scores.shape[1]


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start positions of the windows along one axis.

    ``ceil((size - patch) / max(step · patch, 1)) + 1`` windows, evenly spaced (rounded to voxels), the first at 0 and
    the last at ``size - patch``.

    Args:
        size: Axis length, at least ``patch`` (pad first).
        patch: Window length.
        step: Largest distance between starts as a fraction of ``patch``.

    Returns:
        Increasing start indices.

    Raises:
        ValueError: ``size < patch``.
    """
    if size < patch:
        raise ValueError(f"axis of {size} voxels is smaller than the patch ({patch}); pad it first")
    if size == patch:
        return [0]
    count = math.ceil((size - patch) / max(step * patch, 1)) + 1  # windows start at least one voxel apart
    spacing = (size - patch) / (count - 1)
    return [int(round(spacing * index)) for index in range(count)]


def window_grid(shape: tuple[int, int, int], patch: tuple[int, int, int], step: float) -> list[tuple[int, int, int]]:
    """(t, h, w) starts of every window, in through-plane-major order.

    Args:
        shape: (T, H, W) volume shape, at least the patch along every axis.
        patch: (T, H, W) window.
        step: See :func:`window_starts`.

    Returns:
        Window starts sorted by t, then h, then w.
    """
    starts = [window_starts(size, size_patch, step) for size, size_patch in zip(shape, patch, strict=True)]
    return [(t, h, w) for t in starts[0] for h in starts[1] for w in starts[2]]


def padding_for(shape: tuple[int, ...], patch: tuple[int, ...]) -> list[tuple[int, int]]:
    """(before, after) zero padding per axis that brings ``shape`` up to ``patch`` (centred, none if larger)."""
    pads = []
    for size, size_patch in zip(shape, patch, strict=True):
        missing = max(0, size_patch - size)
        pads.append((missing // 2, missing - missing // 2))
    return pads


def pad_volume(volume: torch.Tensor, patch: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pads a volume to at least the patch size, each channel with its own smallest value (as training patches
    are padded with the image's darkest value; a label channel travelling with the image pads with 0).

    Args:
        volume: (C, T, H, W).
        patch: (T, H, W) window.

    Returns:
        (padded (C, T', H', W'), slices of (T', H', W') that hold the original volume).
    """
    pads = padding_for(tuple(volume.shape[1:]), patch)
    crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, volume.shape[1:], strict=True))
    if not any(before or after for before, after in pads):
        return volume, crop
    padded_shape = tuple(size + before + after for size, (before, after) in zip(volume.shape[1:], pads, strict=True))
    darkest = volume.flatten(1).amin(dim=1)  # (C,)
    padded = darkest.view(-1, 1, 1, 1).expand(volume.shape[0], *padded_shape).clone()  # (C, T', H', W')
    padded[(slice(None), *crop)] = volume
    return padded, crop


def gaussian_importance_map(
    patch: tuple[int, int, int], *, sigma_scale: float = 1.0 / 8.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Separable Gaussian over a patch, 1 at the centre, strictly positive everywhere.

    Centred at ``(size - 1) / 2`` per axis (nnU-Net filters a delta at ``size // 2``, which is off-centre for
    even sizes); the symmetric map keeps mirroring and window order from biasing the blend.

    Args:
        patch: (T, H, W) window.
        sigma_scale: Sigma as a fraction of each axis length.
        device: Where to build it.

    Returns:
        (T, H, W) float32, maximum 1, minimum > 0.
    """
    profiles = []
    for size in patch:
        position = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        sigma = max(size * sigma_scale, 1e-3)
        profiles.append(torch.exp(-0.5 * (position / sigma) ** 2))
    weights = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]  # (T, H, W)
    weights = weights / weights.max()
    floor = weights[weights > 0].min() if bool((weights > 0).any()) else torch.tensor(1.0, dtype=weights.dtype)
    return weights.clamp_min(floor).float()  # underflow to 0 on huge patches would leave voxels unweighted


def _batches(windows: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    return [windows[index : index + size] for index in range(0, len(windows), size)]


def stream_scores(
    volume: torch.Tensor,
    score_function: ScoreFunction,
    *,
    num_classes: int,
    config: SlidingWindowConfig,
    device: torch.device | str = "cpu",
) -> Iterator[ScoreSlab]:
    """Runs the score function over every window and yields finished slices as soon as no window needs them.

    Args:
        volume: (C, T, H, W) float32 preprocessed image (any device; windows are moved to ``device``).
        score_function: (B, C, t, h, w) patches on ``device`` -> (B, K, t, h, w) float32 scores.
        num_classes: K.
        config: Patch size, step, windows per batch, Gaussian sigma.
        device: Where windows are scored and accumulated.

    Yields:
        Slabs in slice order covering ``0 .. T-1`` exactly once, scores on ``device``.
    """
    patch = config.patch_size
    padded, crop = pad_volume(volume, patch)
    padded_shape = tuple(padded.shape[1:])
    windows = window_grid(padded_shape, patch, config.step)
    batches = _batches(windows, config.windows_per_batch)
    gaussian = gaussian_importance_map(patch, sigma_scale=config.sigma_scale, device=device)  # (t, h, w)
    # Rows held at once: from the first window of a batch to the end of its last window.
    capacity = max(batch[-1][0] + patch[0] - batch[0][0] for batch in batches)
    scores = torch.zeros((num_classes, capacity, *padded_shape[1:]), dtype=torch.float32, device=device)
    weights = torch.zeros((capacity, *padded_shape[1:]), dtype=torch.float32, device=device)
    first = 0  # padded slice index of row 0 of the accumulator
    t_crop, h_crop, w_crop = crop
    for index, batch in enumerate(batches):
        patches = torch.stack(
            [padded[:, t : t + patch[0], h : h + patch[1], w : w + patch[2]] for t, h, w in batch]
        ).to(device, non_blocking=True)  # (B, C, t, h, w)
        batch_scores = score_function(patches).float()  # (B, K, t, h, w)
        for (t, h, w), window_scores in zip(batch, batch_scores, strict=True):
            rows = slice(t - first, t - first + patch[0])
            scores[:, rows, h : h + patch[1], w : w + patch[2]].addcmul_(window_scores, gaussian)
            weights[rows, h : h + patch[1], w : w + patch[2]] += gaussian
        # Rows before the next window's start are complete.
        done_until = batches[index + 1][0][0] if index + 1 < len(batches) else padded_shape[0]
        finished = done_until - first
        if finished <= 0:
            continue
        keep_from, keep_to = max(first, t_crop.start), min(done_until, t_crop.stop)
        if keep_from < keep_to:
            rows = slice(keep_from - first, keep_to - first)
            normalised = scores[:, rows, h_crop, w_crop] / weights[rows, h_crop, w_crop]  # (K, rows, H, W)
            yield ScoreSlab(start=keep_from - t_crop.start, scores=normalised)
        # Shift the unfinished rows to the front of the accumulator.
        remaining = capacity - finished
        if remaining > 0:
            scores[:, :remaining] = scores[:, finished:].clone()
            weights[:remaining] = weights[finished:].clone()
        scores[:, remaining:] = 0
        weights[remaining:] = 0
        first = done_until


def sliding_window_scores(
    volume: torch.Tensor,
    score_function: ScoreFunction,
    *,
    num_classes: int,
    config: SlidingWindowConfig,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The whole (K, T, H, W) score map of a volume (collects :func:`stream_scores`).

    Args:
        volume: (C, T, H, W) float32 preprocessed image.
        score_function: (B, C, t, h, w) -> (B, K, t, h, w) float32 scores.
        num_classes: K.
        config: Patch size, step, windows per batch, Gaussian sigma.
        device: Where windows are scored and accumulated.

    Returns:
        (K, T, H, W) float32 on the CPU.
    """
    _, num_slices, height, width = volume.shape
    result = torch.empty((num_classes, num_slices, height, width), dtype=torch.float32)
    for slab in stream_scores(volume, score_function, num_classes=num_classes, config=config, device=device):
        result[:, slab.start : slab.stop] = slab.scores.cpu()
    return result
