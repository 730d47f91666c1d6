"""Slices as images: folding depth into the batch, and learnable depth positional embeddings (§2.5 ii, §2.6 ii).

Layout convention used across masksam.model: a stack of slices is a batch of G*T images, grouped so that
the T slices of one volume patch (or of one query of one patch) are consecutive: index = g * T + t.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_depth(volume: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) patch -> (B*T, C, H, W) slices."""
    batch, channels, depth, height, width = volume.shape
    return volume.permute(0, 2, 1, 3, 4).reshape(batch * depth, channels, height, width)


def unfold_depth(slices: torch.Tensor, num_slices: int) -> torch.Tensor:
    """(G*T, C, H, W) slices -> (G, C, T, H, W) volume, the inverse of `fold_depth`."""
    groups = slices.shape[0] // num_slices
    return slices.reshape(groups, num_slices, *slices.shape[1:]).transpose(1, 2)


class DepthPositionalEmbedding(nn.Module):
    """A zero-initialised (T, C) table; `forward` adds row t to every token of slice t.

    The slice index is read from the layout convention above, so any (G*T, ..., C) tensor works.
    """

    def __init__(self, num_slices: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(num_slices, dim))

    def forward(self, tokens: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
        """tokens (G*T, ..., C) if channels_last else (G*T, C, ...) -> same shape with depth positions added."""
        num_slices = self.table.shape[0]
        grouped = tokens.reshape(-1, num_slices, *tokens.shape[1:])  # (G, T, ...)
        extra_dims = tokens.dim() - 2
        if channels_last:
            table = self.table.view(num_slices, *([1] * extra_dims), -1)
        else:
            table = self.table.view(num_slices, -1, *([1] * extra_dims))
        return (grouped + table).reshape(tokens.shape)
