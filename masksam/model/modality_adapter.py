"""Modality adapter (paper §2.5 i): any number of input channels -> the 3 channels SAM expects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.common import cpu_conv3d_region
from masksam.backbones.sam import BackboneSpec, pixel_affine

# LiteMedSAM's own preparation of an MR slice: clip to the 0.5 and 99.5 percentiles, then min-max to [0, 1].
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5


def slice_unit_range(grey: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) -> same shape, each slice clipped to its 0.5/99.5 percentiles and scaled to [0, 1].

    Both steps ignore any positive affine map of the intensities, so a z-scored (or CT-normalised) patch
    gives what the backbone's own pipeline gives for the raw slice. A constant slice becomes 0.
    """
    flat = grey.detach().flatten(-2).float()  # (B, 1, T, H*W)
    quantiles = torch.tensor([LOWER_PERCENTILE / 100, UPPER_PERCENTILE / 100], device=grey.device)
    low, high = torch.quantile(flat, quantiles, dim=-1, keepdim=True).unsqueeze(-1)  # (B, 1, T, 1, 1) each
    clipped = torch.minimum(torch.maximum(grey, low), high)
    return (clipped - low) / (high - low).clamp(min=1e-8)


class ModalityAdapter(nn.Module):
    """(B, C, T, H, W) patch -> (B, 3, T, S, S) backbone input.

    The output is the backbone's own input mapping of the channel mean (`slice_unit_range`, then
    `backbone_pixels`' per-channel affine, kept as learnable scale and shift) plus a learned 3D conv branch
    (C -> hidden -> 3) whose last layer starts at zero, so an untrained adapter feeds the backbone exactly
    what its pretrained weights expect. H×W is resized to S×S when the patch and the backbone input differ.
    """

    def __init__(self, *, in_channels: int, hidden: int, image_size: int, spec: BackboneSpec) -> None:
        super().__init__()
        self.image_size = image_size
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, hidden, kernel_size=3, padding=1),
            nn.InstanceNorm3d(hidden, affine=True),
            nn.LeakyReLU(0.01),
            nn.Conv3d(hidden, 3, kernel_size=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        scale, shift = pixel_affine(spec)
        self.scale = nn.Parameter(scale.view(1, 3, 1, 1, 1).clone())
        self.shift = nn.Parameter(shift.view(1, 3, 1, 1, 1).clone())

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        unit = slice_unit_range(volume.mean(dim=1, keepdim=True))  # (B, 1, T, H, W) in [0, 1]
        with cpu_conv3d_region(volume.device):
            learned = self.body(volume.float())  # (B, 3, T, H, W)
        rgb = unit * self.scale + self.shift + learned
        if rgb.shape[-2:] != (self.image_size, self.image_size):
            rgb = F.interpolate(rgb, size=(rgb.shape[2], self.image_size, self.image_size), mode="trilinear")
        return rgb
