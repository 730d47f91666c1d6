"""Point sampling of mask logits and targets (Mask2Former's trick, DESIGN §4).

Matching and mask losses are computed on P points per mask instead of every pixel. Points are continuous
(x, y) coordinates in [0, 1] (x along W, y along H, the `grid_sample` order); values at a point are read by
bilinear interpolation, so logits and targets of different resolutions can be compared and binary targets
become soft near edges.

- Matching: P uniform random points per slice, shared by all predictions and targets of that slice.
- Loss: per matched mask, P·oversample_ratio uniform candidates; the importance_ratio·P most uncertain
  (uncertainty = −|logit|, i.e. logits closest to the decision boundary) are kept and the rest of the P
  points are drawn uniformly again.

When P ≥ H·W, sampling would only add noise: every pixel is used instead and the point set is `None`
(`read_points` then flattens the maps), which makes matching and losses exact and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PointSamplingConfig:
    """How the mask loss samples points.

    num_points: P, points per mask (Mask2Former: 112·112); every pixel is used when P ≥ H·W.
    oversample_ratio: candidates drawn per kept point before importance selection (DESIGN §4: 2).
    importance_sample_ratio: share of the P points taken from the most uncertain candidates (0.75).
    """

    num_points: int = 112 * 112
    oversample_ratio: float = 2.0
    importance_sample_ratio: float = 0.75

    def __post_init__(self) -> None:
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        if self.oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {self.oversample_ratio}")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must lie in [0, 1], got {self.importance_sample_ratio}")


def uses_every_pixel(height: int, width: int, num_points: int) -> bool:
    """True when P points would be at least as many as the H·W pixels (then every pixel is used)."""
    return num_points >= height * width


def random_points(
    num_sets: int,
    num_points: int,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform random (x, y) points in [0, 1).

    Args:
        num_sets: M, independent point sets (slices or masks).
        num_points: P, points per set.
        device: Where the points live.
        generator: Random source (on `device`); the global one if None.

    Returns:
        (M, P, 2) float32 coordinates.
    """
    return torch.rand(num_sets, num_points, 2, device=device, generator=generator)


def read_points(values: torch.Tensor, points: torch.Tensor | None) -> torch.Tensor:
    """Values of maps at points, by bilinear interpolation (edge values repeat beyond the border).

    Args:
        values: (M, C, H, W) float maps (logits or 0/1 targets).
        points: (M, P, 2) (x, y) in [0, 1], one set per map group; None for every pixel in row-major order.

    Returns:
        (M, C, P), or (M, C, H·W) when `points` is None.
    """
    if points is None:
        return values.flatten(2)  # (M, C, H*W)
    grid = (2 * points - 1).unsqueeze(2).to(values.dtype)  # (M, P, 1, 2) in grid_sample's [-1, 1]
    sampled = F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.squeeze(3)  # (M, C, P)


def matching_points(
    num_slices: int,
    height: int,
    width: int,
    num_points: int,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """One uniform point set per slice for the matching cost, or None when every pixel is used.

    Returns:
        (G, P, 2) points, G = `num_slices`, or None if P ≥ H·W.
    """
    if uses_every_pixel(height, width, num_points):
        return None
    return random_points(num_slices, num_points, device=device, generator=generator)


def uncertain_points(
    logits: torch.Tensor,
    config: PointSamplingConfig,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Importance-sampled points of each mask, favouring pixels whose logit is near zero.

    Runs without gradient: the choice of points is not trained.

    Args:
        logits: (M, H, W) mask logits.
        config: Number of points, oversampling and importance ratios.
        generator: Random source (on the logits' device); the global one if None.

    Returns:
        (M, P, 2) points, or None if P ≥ H·W (every pixel is used).
    """
    num_masks, height, width = logits.shape
    num_points = config.num_points
    if uses_every_pixel(height, width, num_points):
        return None
    num_candidates = int(num_points * config.oversample_ratio)
    num_uncertain = int(num_points * config.importance_sample_ratio)
    with torch.no_grad():
        candidates = random_points(num_masks, num_candidates, device=logits.device, generator=generator)
        candidate_logits = read_points(logits.detach()[:, None].float(), candidates)[:, 0]  # (M, P*oversample)
        uncertainty = -candidate_logits.abs()
        top = uncertainty.topk(num_uncertain, dim=1).indices  # (M, P_uncertain)
        chosen = torch.gather(candidates, 1, top[:, :, None].expand(-1, -1, 2))  # (M, P_uncertain, 2)
        uniform = random_points(num_masks, num_points - num_uncertain, device=logits.device, generator=generator)
        return torch.cat([chosen, uniform], dim=1)  # (M, P, 2)
