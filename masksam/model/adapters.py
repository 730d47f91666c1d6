"""Bottleneck adapters with depth mixing (paper §2.4, Fig. 4): vanilla, DMLPAdapter and DConvAdapter.

An adapter maps tokens (G*T, ..., C) -> same shape: Linear C->r, GELU, a depth mixer, Linear r->C, plus
the outer skip. The mixer sees the T slices of each group (layout of masksam.model.depth):
  - DepthConvMixer: depth-wise Conv3d 3×3×3 over (T, h, w) + LayerNorm + GELU, as a residual branch;
  - DepthMLPMixer: an inverted-bottleneck MLP over the T axis (T -> 4T -> T), as a residual branch.
Where the mixer sits is configurable for the Tab. 4 ablations: in the bottleneck ("middle", the paper's
DMLP/DConv adapters), after the up-projection, or before the down-projection.
The up-projection starts at zero, so a fresh adapter is the identity and the model starts as SAM.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from masksam.backbones.common import cpu_conv3d_region
from masksam.model.config import ImageAdapterKind, TokenAdapterKind

MixerPosition = Literal["middle", "after_up", "before_down"]


class DepthConvMixer(nn.Module):
    """Residual depth-wise 3×3×3 conv over (T, h, w) on (G*T, h*w, C) or (G*T, h, w, C) tokens."""

    def __init__(self, dim: int, num_slices: int) -> None:
        super().__init__()
        self.num_slices = num_slices
        self.conv = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        channels = tokens.shape[-1]
        volume = tokens.reshape(-1, self.num_slices, h, w, channels).permute(0, 4, 1, 2, 3)  # (G, C, T, h, w)
        with cpu_conv3d_region(tokens.device):
            mixed = self.conv(volume.float()).permute(0, 2, 3, 4, 1)  # (G, T, h, w, C)
        mixed = self.act(self.norm(mixed)).reshape(tokens.shape)
        return tokens + mixed


class DepthMLPMixer(nn.Module):
    """Residual MLP across the T slices of each group, applied per token and channel."""

    def __init__(self, num_slices: int, ratio: int) -> None:
        super().__init__()
        self.num_slices = num_slices
        self.fc1 = nn.Linear(num_slices, num_slices * ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(num_slices * ratio, num_slices)
        nn.init.zeros_(self.fc2.weight)  # starts as the identity wherever it sits in the adapter
        nn.init.zeros_(self.fc2.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        grouped = tokens.reshape(-1, self.num_slices, *tokens.shape[1:])  # (G, T, ...)
        along_depth = grouped.movedim(1, -1)  # (G, ..., T)
        mixed = self.fc2(self.act(self.fc1(along_depth))).movedim(-1, 1)  # (G, T, ...)
        return tokens + mixed.reshape(tokens.shape)


class Adapter(nn.Module):
    """Bottleneck adapter with an optional depth mixer; forward(tokens, grid) keeps the tokens' shape."""

    def __init__(
        self,
        *,
        dim: int,
        bottleneck: int,
        mixer: nn.Module | None = None,
        mixer_position: MixerPosition = "middle",
        skip: bool = True,
    ) -> None:
        """
        Arguments:
          skip: add the input to the output (adapters in series); False for adapters beside an MLP.
        """
        super().__init__()
        self.skip = skip
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.mixer = mixer
        self.mixer_position = mixer_position

    def _mix(self, tokens: torch.Tensor, grid: tuple[int, int] | None, position: MixerPosition) -> torch.Tensor:
        if self.mixer is None or self.mixer_position != position:
            return tokens
        return self.mixer(tokens, grid)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """tokens (G*T, ..., C); `grid` = (h, w) of the image tokens, needed by the conv mixer."""
        x = self._mix(tokens, grid, "before_down")
        x = self._mix(self.act(self.down(x)), grid, "middle")
        x = self._mix(self.up(x), grid, "after_up")
        return tokens + x if self.skip else x


def build_adapter(
    kind: ImageAdapterKind | TokenAdapterKind,
    *,
    dim: int,
    bottleneck: int,
    num_slices: int,
    depth_mlp_ratio: int,
    skip: bool = True,
) -> Adapter | None:
    """An adapter of the named kind (None for "none"); the depth mixer runs on the width it sits at."""
    if kind == "none":
        return None
    if kind == "vanilla":
        return Adapter(dim=dim, bottleneck=bottleneck, skip=skip)
    if kind == "depth_conv":
        return Adapter(dim=dim, bottleneck=bottleneck, mixer=DepthConvMixer(bottleneck, num_slices), skip=skip)
    positions: dict[str, MixerPosition] = {
        "depth_mlp": "middle",
        "depth_mlp_after_up": "after_up",
        "depth_mlp_before_down": "before_down",
    }
    if kind not in positions:
        raise ValueError(f"unknown adapter kind {kind!r}")
    return Adapter(
        dim=dim,
        bottleneck=bottleneck,
        mixer=DepthMLPMixer(num_slices, depth_mlp_ratio),
        mixer_position=positions[kind],
        skip=skip,
    )
