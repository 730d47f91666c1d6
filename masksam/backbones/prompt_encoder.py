"""SAM's prompt encoder (points, boxes, low-resolution masks), with Meta's parameter names."""

from __future__ import annotations

import math

import torch
from torch import nn

from masksam.backbones.common import LayerNorm2d, float32_region


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) in [0, 1] through a fixed random Gaussian matrix."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalised coordinates -> (..., 2 * num_pos_feats) float32, whatever the autocast state.

        In float32 always: bf16 would round a normalised coordinate to 1/256 (a pixel of a 256² image, 4 at 1024²)
        and a sine's argument, up to about ±20 rad, to 1/16 rad.
        """
        with float32_region(coords.device):
            projected = (2 * coords.float() - 1) @ self.positional_encoding_gaussian_matrix.float()
            projected = 2 * math.pi * projected
            return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an h×w grid of cell centres: (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, n, 2) pixel coordinates (x, y) in an image of `image_size` (H, W) -> (B, n, C)."""
        normalised = coords.clone().float()
        normalised[..., 0] = normalised[..., 0] / image_size[1]
        normalised[..., 1] = normalised[..., 1] / image_size[0]
        return self.encode(normalised)


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder: sparse tokens for points/boxes, a dense map for a mask."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        """
        Arguments:
          embed_dim: prompt embedding width (256 for SAM).
          image_embedding_size: (h, w) of the image embedding.
          input_image_size: (H, W) of the frame in which point and box coordinates are given, in pixels.
          mask_in_chans: hidden channels of the mask-downscaling path.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0/1: negative/positive point, 2/3: box top-left/bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: (1, C, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, n, 2) pixel points and (B, n) labels (1 fg, 0 bg, -1 padding) -> (B, n[+1], C)."""
        points = points + 0.5  # to pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        is_pad, is_bg, is_fg = (labels == -1)[..., None], (labels == 0)[..., None], (labels == 1)[..., None]
        embedding = torch.where(is_pad, self.not_a_point_embed.weight.expand_as(embedding), embedding)
        embedding = embedding + is_bg * self.point_embeddings[0].weight + is_fg * self.point_embeddings[1].weight
        return embedding

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) xyxy pixel boxes -> (B, 2, C) corner tokens."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # (B, corner, xy)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return embedding + corner_types

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 4h, 4w) mask logits -> (B, C, h, w) dense embedding."""
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          points: (coords (B, n, 2), labels (B, n)) in pixels of `input_image_size`, or None.
          boxes: (B, 4) xyxy in pixels of `input_image_size`, or None.
          masks: (B, 1, 4h, 4w) low-resolution mask logits, or None.
        Returns:
          sparse embeddings (B, n_tokens, C) and dense embeddings (B, C, h, w).
        """
        batch = _batch_size(points, boxes, masks)
        sparse = [torch.empty(batch, 0, self.embed_dim, device=self.no_mask_embed.weight.device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return torch.cat(sparse, dim=1), dense


def _batch_size(
    points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None, masks: torch.Tensor | None
) -> int:
    """Number of prompts, read from the first prompt that is given (1 when none is)."""
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
