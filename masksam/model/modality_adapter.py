"""Modality adapter (paper §2.5 i): any number of input channels -> the 3 channels SAM expects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ModalityAdapter(nn.Module):
    """(B, C, T, H, W) patch -> (B, 3, T, S, S) backbone input.

    The output is a fixed grey-to-RGB mapping (channel mean × `input_scale` + `input_shift`, which puts a
    z-scored image in the range the backbone was trained on) plus a learned 3D conv branch
    (C -> hidden -> 3, inverted bottleneck) whose last layer starts at zero. H×W is resized to S×S when
    the patch and the backbone input differ.
    """

    def __init__(
        self, *, in_channels: int, hidden: int, image_size: int, input_scale: float, input_shift: float
    ) -> None:
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
        self.scale = nn.Parameter(torch.full((1, 3, 1, 1, 1), float(input_scale)))
        self.shift = nn.Parameter(torch.full((1, 3, 1, 1, 1), float(input_shift)))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        grey = volume.mean(dim=1, keepdim=True)  # (B, 1, T, H, W)
        rgb = grey * self.scale + self.shift + self.body(volume)  # (B, 3, T, H, W)
        if rgb.shape[-2:] != (self.image_size, self.image_size):
            rgb = F.interpolate(rgb, size=(rgb.shape[2], self.image_size, self.image_size), mode="trilinear")
        return rgb
