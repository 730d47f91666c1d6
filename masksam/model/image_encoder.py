"""SAM's frozen image encoders with MaskSAM's adapters and depth embedding composed around their blocks.

Both wrappers take slices (G*T, 3, S, S) (layout of masksam.model.depth) and return `EncoderFeatures`:
the neck embedding plus the multi-level maps the prompt generator reads (paper §2.5 iii, Fig. 3a).
Adapters act on the un-windowed token grid of each block, so their depth convolution always sees
true neighbouring slices (the authors applied it to window partitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from masksam.backbones.image_encoder_vit import ImageEncoderViT
from masksam.model.adapters import Adapter, build_adapter
from masksam.model.config import AdapterConfig
from masksam.model.depth import DepthPositionalEmbedding


@dataclass
class EncoderFeatures:
    """embedding: neck output (G*T, 256, h, w); levels: maps (G*T, C_l, h_l, w_l), shallow to deep."""

    embedding: torch.Tensor
    levels: list[torch.Tensor]


def build_block_adapters(config: AdapterConfig, dims: list[int], num_slices: int, skip: bool) -> nn.ModuleList:
    """One adapter per block of width `dims[i]` (an empty list when adapters are off)."""
    built = [
        build_adapter(
            config.image_adapter,
            dim=dim,
            bottleneck=max(1, int(dim * config.bottleneck_ratio)),
            num_slices=num_slices,
            depth_mlp_ratio=config.depth_mlp_ratio,
            skip=skip,
        )
        for dim in dims
    ]
    return nn.ModuleList(adapter for adapter in built if adapter is not None)


class AdaptedViTEncoder(nn.Module):
    """SAM ViT encoder + DConvAdapters (two per block) + encoder depth positional embedding."""

    def __init__(self, encoder: ImageEncoderViT, *, config: AdapterConfig, num_slices: int) -> None:
        super().__init__()
        self.encoder = encoder
        dims = [encoder.embed_dim] * len(encoder.blocks)
        self.attention_adapters = build_block_adapters(config, dims, num_slices, skip=True)
        self.mlp_adapters = build_block_adapters(config, dims, num_slices, skip=False)
        self.parallel_scale = config.parallel_scale
        self.depth_embedding = (
            DepthPositionalEmbedding(num_slices, encoder.embed_dim) if config.encoder_depth_embedding else None
        )
        self.gradient_checkpointing = False
        # True: the adapters sit out (they are zero-initialised, so the encoder computes SAM's features) and the
        # whole encoder runs without autograd: a cheaper first phase of training (DESIGN §10 "cheaper steps").
        self.adapters_paused = False

    @property
    def level_channels(self) -> list[int]:
        return [self.encoder.embed_dim] * len(self.encoder.global_attn_indexes)

    @property
    def level_sizes(self) -> list[int]:
        return [self.encoder.embedding_size] * len(self.encoder.global_attn_indexes)

    def adapted_block(
        self,
        index: int,
        attention_out: torch.Tensor,
        tokens: torch.Tensor,
        norm: nn.Module,
        mlp: nn.Module,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """tokens + attention (adapted), then + MLP and the parallel adapter on the MLP's input."""
        if self.attention_adapters:
            attention_out = self.attention_adapters[index](attention_out, grid)
        tokens = tokens + attention_out
        normed = norm(tokens)
        mlp_out = mlp(normed)
        if self.mlp_adapters:
            adapter: Adapter = self.mlp_adapters[index]
            mlp_out = mlp_out + self.parallel_scale * adapter(normed, grid)
        return tokens + mlp_out

    def _block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        block = self.encoder.blocks[index]
        grid = (tokens.shape[1], tokens.shape[2])
        return self.adapted_block(index, block.attention_branch(tokens), tokens, block.norm2, block.mlp, grid)

    def forward(self, slices: torch.Tensor) -> EncoderFeatures:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.adapters_paused):
            return self._features(slices)

    def _features(self, slices: torch.Tensor) -> EncoderFeatures:
        tokens = self.encoder.embed_patches(slices)  # (G*T, h, w, E)
        if self.depth_embedding is not None:
            tokens = self.depth_embedding(tokens)
        levels = []
        for index in range(len(self.encoder.blocks)):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(self._block, index, tokens, use_reentrant=False)
            else:
                tokens = self._block(index, tokens)
            if index in self.encoder.global_attn_indexes:
                levels.append(tokens.permute(0, 3, 1, 2))  # (G*T, E, h, w)
        embedding = self.encoder.neck(tokens.permute(0, 3, 1, 2))
        return EncoderFeatures(embedding=embedding, levels=levels)
