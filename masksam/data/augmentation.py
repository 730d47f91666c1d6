"""nnU-Net-style data augmentation of one (C, T, H, W) patch in torch, as 2D-per-slice spatial transforms.

Spatial transforms act in-plane only (the same rotation and scaling for every slice of a patch), as
nnU-Net does for anisotropic data: through-plane resolution is too coarse to rotate across. The spatial
parameters are drawn *before* the patch is cut (:func:`draw_spatial`, :func:`input_size_for`), so the
sampler reads exactly the larger region the rotation needs and never shows invented borders.

Defaults follow nnU-Net v2's training transforms (probabilities and ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of every augmentation (nnU-Net v2 defaults).

    Attributes:
        rotation_probability: Chance of an in-plane rotation.
        rotation_max_radians: Rotation angle drawn uniformly in ±this.
        scale_probability: Chance of in-plane scaling.
        scale_range: Scale factor range; >1 shows a larger field of view (zoom out).
        noise_probability: Chance of additive Gaussian noise.
        noise_variance: Noise variance range.
        blur_probability: Chance of Gaussian blur (each channel then with probability 0.5).
        blur_sigma: Blur sigma range (pixels, in-plane).
        brightness_probability: Chance of a multiplicative brightness change.
        brightness_range: Multiplier range.
        contrast_probability: Chance of a contrast change (range preserved).
        contrast_range: Contrast factor range.
        low_resolution_probability: Chance of simulating low resolution (per channel 0.5).
        low_resolution_zoom: Downsampling factor range.
        gamma_probability: Chance of a gamma change (statistics retained).
        gamma_inverted_probability: Chance of a gamma change of the inverted image.
        gamma_range: Gamma range (half the time below 1).
        mirror_axes: Axes of (T, H, W) that may be flipped, each with probability 0.5.
    """

    rotation_probability: float = 0.2
    rotation_max_radians: float = math.pi
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_probability: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_probability: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_probability: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    low_resolution_probability: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_probability: float = 0.3
    gamma_inverted_probability: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class SpatialParams:
    """In-plane rotation (radians) and scale of one patch."""

    angle: float = 0.0
    scale: float = 1.0


def draw_spatial(config: AugmentationConfig, rng: np.random.Generator) -> SpatialParams | None:
    """Draws this patch's rotation and scale; None when neither applies (plain crop, no interpolation)."""
    rotate = rng.random() < config.rotation_probability
    scale = rng.random() < config.scale_probability
    if not (rotate or scale):
        return None
    angle = float(rng.uniform(-config.rotation_max_radians, config.rotation_max_radians)) if rotate else 0.0
    factor = float(rng.uniform(*config.scale_range)) if scale else 1.0
    return SpatialParams(angle, factor)


def input_size_for(patch_size: tuple[int, int, int], params: SpatialParams | None) -> tuple[int, int, int]:
    """Size of the region to cut so that the transformed patch stays inside it.

    Args:
        patch_size: (T, H, W) output patch.
        params: Spatial parameters (None: the patch itself).

    Returns:
        (T, H_in, W_in).
    """
    t, h, w = patch_size
    if params is None:
        return patch_size
    cos, sin = abs(math.cos(params.angle)), abs(math.sin(params.angle))
    h_in = math.ceil(params.scale * (h * cos + w * sin) - 1e-6) + 2  # +2: bilinear neighbours at the edge
    w_in = math.ceil(params.scale * (w * cos + h * sin) - 1e-6) + 2
    return (t, max(h, h_in), max(w, w_in))


def apply_spatial(
    image: torch.Tensor, label: torch.Tensor, size: tuple[int, int], params: SpatialParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates and scales every slice about the centre and cuts the central ``size`` region.

    Args:
        image: (C, T, H_in, W_in) float32.
        label: (T, H_in, W_in) integer class ids.
        size: (H, W) output size.
        params: Rotation and scale.

    Returns:
        (image (C, T, H, W) bilinear, label (T, H, W) nearest, of the input label's dtype).
    """
    c, t, h_in, w_in = image.shape
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) output offsets from the centre
    cos, sin = math.cos(params.angle), math.sin(params.angle)
    x_in = params.scale * (cos * x - sin * y) + (w_in - 1) / 2
    y_in = params.scale * (sin * x + cos * y) + (h_in - 1) / 2
    grid = torch.stack([2 * x_in / (w_in - 1) - 1, 2 * y_in / (h_in - 1) - 1], dim=-1)[None]  # (1, H, W, 2)
    image = F.grid_sample(image.reshape(1, c * t, h_in, w_in), grid, mode="bilinear", align_corners=True)
    resampled = F.grid_sample(label[None].float(), grid, mode="nearest", align_corners=True)
    return image.reshape(c, t, h, w), resampled[0].to(label.dtype)


def center_crop(array: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Central (H, W) region of the last two axes."""
    h_in, w_in = array.shape[-2:]
    top, left = (h_in - size[0]) // 2, (w_in - size[1]) // 2
    return array[..., top : top + size[0], left : left + size[1]]


def _gaussian_blur(channel: torch.Tensor, sigma: float) -> torch.Tensor:
    # channel: (T, H, W); separable in-plane Gaussian with reflect padding.
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = channel[:, None]  # (T, 1, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _low_resolution(channel: torch.Tensor, zoom: float) -> torch.Tensor:
    # channel: (T, H, W); nearest downsampling then bicubic upsampling, in-plane.
    h, w = channel.shape[-2:]
    small = F.interpolate(channel[None], size=(max(1, round(h * zoom)), max(1, round(w * zoom))), mode="nearest")
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0]


def _gamma(channel: torch.Tensor, gamma: float, invert: bool) -> torch.Tensor:
    # channel: (T, H, W); gamma on the [0, 1]-rescaled image, mean and std restored afterwards.
    x = -channel if invert else channel
    mean, std = x.mean(), x.std()
    low, span = x.min(), (x.max() - x.min()).clamp_min(1e-7)
    x = ((x - low) / span).pow(gamma) * span + low
    x = (x - x.mean()) / x.std().clamp_min(1e-7) * std + mean
    return -x if invert else x


def apply_intensity(image: torch.Tensor, config: AugmentationConfig, rng: np.random.Generator) -> torch.Tensor:
    """Noise, blur, brightness, contrast, low resolution and gamma, in nnU-Net's order.

    Args:
        image: (C, T, H, W) float32 (modified copy returned).
        config: Probabilities and ranges.
        rng: Random generator.

    Returns:
        (C, T, H, W) float32.
    """
    image = image.clone()
    if rng.random() < config.noise_probability:
        std = math.sqrt(rng.uniform(*config.noise_variance))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image += torch.randn(image.shape, generator=generator) * std
    if rng.random() < config.blur_probability:
        for c in range(image.shape[0]):
            if rng.random() < 0.5:
                image[c] = _gaussian_blur(image[c], float(rng.uniform(*config.blur_sigma)))
    if rng.random() < config.brightness_probability:
        image *= torch.from_numpy(rng.uniform(*config.brightness_range, size=(image.shape[0], 1, 1, 1))).float()
    if rng.random() < config.contrast_probability:
        for c in range(image.shape[0]):
            mean, low, high = image[c].mean(), image[c].min(), image[c].max()
            image[c] = ((image[c] - mean) * float(rng.uniform(*config.contrast_range)) + mean).clamp(low, high)
    if rng.random() < config.low_resolution_probability:
        for c in range(image.shape[0]):
            if rng.random() < 0.5:
                image[c] = _low_resolution(image[c], float(rng.uniform(*config.low_resolution_zoom)))
    for probability, invert in ((config.gamma_inverted_probability, True), (config.gamma_probability, False)):
        if rng.random() < probability:
            low, high = config.gamma_range
            for c in range(image.shape[0]):
                gamma = rng.uniform(low, 1.0) if (rng.random() < 0.5 and low < 1) else rng.uniform(max(low, 1.0), high)
                image[c] = _gamma(image[c], float(gamma), invert)
    return image


def augment(
    image: torch.Tensor,
    label: torch.Tensor,
    patch_size: tuple[int, int, int],
    params: SpatialParams | None,
    config: AugmentationConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full augmentation of one cut region.

    Args:
        image: (C, T, H_in, W_in) float32, cut with :func:`input_size_for` of ``params``.
        label: (T, H_in, W_in) integer class ids.
        patch_size: (T, H, W) output patch.
        params: Spatial parameters drawn with :func:`draw_spatial`.
        config: Augmentation settings.
        rng: Random generator.

    Returns:
        (image (C, T, H, W) float32, label (T, H, W) of the input label's dtype).
    """
    size = tuple(patch_size[1:])
    if params is None:
        image, label = center_crop(image, size), center_crop(label, size)
    else:
        image, label = apply_spatial(image, label, size, params)
    image = apply_intensity(image, config, rng)
    flips = [axis for axis in config.mirror_axes if rng.random() < 0.5]
    if flips:
        image = image.flip([a + 1 for a in flips])
        label = label.flip(flips)
    return image.contiguous(), label.contiguous()
