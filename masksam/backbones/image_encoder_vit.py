"""SAM's ViT image encoder (ViT-B/L/H and small test variants), with Meta's parameter names.

A block's two halves are exposed separately (`attention_branch`, `norm2` + `mlp`) so that MaskSAM can
compose adapters around them without re-implementing the block (see masksam/model/image_encoder.py).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.common import LayerNorm2d, MLPBlock, attention

PositionAdaptation = Literal["crop", "interpolate"]


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: (B, 3, H, W) -> (B, H/p, W/p, E)."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, h, w, E)


def resize_relative_positions(rel_pos: torch.Tensor, length: int, mode: PositionAdaptation) -> torch.Tensor:
    """Adapt a (L0, head_dim) table of relative-position embeddings to `length` = 2*size-1 entries.

    "crop" keeps the centre (the same token distances as in pre-training, consistent with a top-left crop
    of the absolute embedding); "interpolate" resamples linearly, as SAM itself does.
    """
    if rel_pos.shape[0] == length:
        return rel_pos
    if mode == "crop" and rel_pos.shape[0] > length:
        start = (rel_pos.shape[0] - length) // 2
        return rel_pos[start : start + length]
    resized = F.interpolate(rel_pos.t().unsqueeze(0), size=length, mode="linear")  # (1, head_dim, length)
    return resized.squeeze(0).t()


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor, mode: PositionAdaptation) -> torch.Tensor:
    """Embedding of every (query, key) distance along one axis: returns (q_size, k_size, head_dim)."""
    rel_pos = resize_relative_positions(rel_pos, 2 * max(q_size, k_size) - 1, mode)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[offsets.long()]


class Attention(nn.Module):
    """Multi-head self-attention over a (B, h, w, E) token grid with decomposed relative positions."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        position_adaptation: PositionAdaptation = "crop",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.position_adaptation = position_adaptation
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def relative_position_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Additive attention bias from the queries: q (B*heads, h*w, d) -> (B*heads, h*w, h*w)."""
        table_h = relative_position_table(h, h, self.rel_pos_h, self.position_adaptation)  # (h, h, d)
        table_w = relative_position_table(w, w, self.rel_pos_w, self.position_adaptation)  # (w, w, d)
        q_grid = q.reshape(q.shape[0], h, w, q.shape[-1])
        bias_h = torch.einsum("bhwc,hkc->bhwk", q_grid, table_h)  # (B*heads, h, w, h)
        bias_w = torch.einsum("bhwc,wkc->bhwk", q_grid, table_w)  # (B*heads, h, w, w)
        bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]  # (B*heads, h, w, h, w)
        return bias.reshape(q.shape[0], h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, h, w, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(batch, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, h*w, d)
        q, k, v = qkv.unbind(0)  # each (B, heads, h*w, d)
        bias = self.relative_position_bias(q.reshape(batch * heads, h * w, -1), h, w)  # (B*heads, h*w, h*w)
        # 4-D inputs and mask: PyTorch's CPU flash kernel runs (1.3-3x faster than the math path a 3-D
        # mask falls back to; same values within float32 rounding).
        out = attention(q, k, v, attn_mask=bias.view(batch, heads, h * w, h * w))
        out = out.transpose(1, 2).reshape(batch, h, w, dim)  # (B, h, w, heads*d)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h, w, E) -> (B * num_windows, window, window, E), zero-padding h and w to multiples of window."""
    batch, h, w, dim = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, dim)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, dim), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * num_windows, window, window, E) -> (B, h, w, E)."""
    hp, wp = padded
    batch = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(batch, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)
    return x[:, : size[0], : size[1], :].contiguous()


class Block(nn.Module):
    """Transformer block with windowed (window_size > 0) or global attention; input and output (B, h, w, E)."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        position_adaptation: PositionAdaptation = "crop",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attention_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(
            dim=dim, num_heads=num_heads, input_size=attention_size, position_adaptation=position_adaptation
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio))
        self.window_size = window_size

    @property
    def is_global(self) -> bool:
        return self.window_size == 0

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output before the residual sum, on the full (un-windowed) (B, h, w, E) grid."""
        y = self.norm1(x)
        if self.is_global:
            return self.attn(y)
        h, w = y.shape[1:3]
        windows, padded = window_partition(y, self.window_size)
        return window_unpartition(self.attn(windows), self.window_size, padded, (h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention_branch(x)
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's image encoder: patch embedding, absolute positions, ViT blocks, and a 256-channel neck.

    The absolute position table is stored at the pre-training grid (64×64 for 1024 inputs, so official
    files load strictly). For a smaller input (512 or 256) the table is adapted at run time:
    "crop" takes its top-left h×w corner (the authors' choice) and centre-crops the relative-position
    tables of the global blocks; "interpolate" resizes both bicubically/linearly.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        pretrain_img_size: int = 1024,
        position_adaptation: PositionAdaptation = "crop",
    ) -> None:
        """
        Arguments:
          img_size: side of the square input this encoder will be run at.
          pretrain_img_size: side at which the stored position tables were trained (1024 for SAM).
          global_attn_indexes: blocks with global attention; the others attend within windows.
          position_adaptation: how position tables follow an input smaller than `pretrain_img_size`.
        """
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.global_attn_indexes = tuple(global_attn_indexes)
        self.position_adaptation = position_adaptation
        grid = pretrain_img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                window_size=0 if i in self.global_attn_indexes else window_size,
                input_size=(grid, grid),
                position_adaptation=position_adaptation,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @property
    def embedding_size(self) -> int:
        """Side of the output embedding grid for `img_size` inputs."""
        return self.img_size // self.patch_size

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """Absolute position table for an h×w token grid: (1, h, w, E)."""
        table = self.pos_embed
        if table.shape[1:3] == (h, w):
            return table
        if self.position_adaptation == "crop" and table.shape[1] >= h and table.shape[2] >= w:
            return table[:, :h, :w, :]
        resized = F.interpolate(table.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, E) tokens with absolute positions added."""
        tokens = self.patch_embed(x)
        return tokens + self.position_embedding(tokens.shape[1], tokens.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> image embedding (B, out_chans, H/16, W/16)."""
        tokens = self.embed_patches(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.neck(tokens.permute(0, 3, 1, 2))
