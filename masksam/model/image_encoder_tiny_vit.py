"""LiteMedSAM's frozen TinyViT encoder with MaskSAM's adapters composed around its attention blocks.

Stage 0 (MBConv blocks at full resolution) has no attention, hence no adapters, and nothing before it is
trained: it runs without autograd, so the backward pass starts at stage 1. The encoder depth embedding
is added to the tokens entering stage 1. The prompt generator reads every stage's output map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from masksam.backbones.tiny_vit import TinyViT, TinyViTBlock, tokens_to_map
from masksam.model.config import AdapterConfig
from masksam.model.depth import DepthPositionalEmbedding
from masksam.model.image_encoder import EncoderFeatures, build_block_adapters


class AdaptedTinyViTEncoder(nn.Module):
    """TinyViT + two adapters per attention block + a depth embedding; (G*T, 3, S, S) -> EncoderFeatures."""

    def __init__(self, encoder: TinyViT, *, config: AdapterConfig, num_slices: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.attention_blocks: list[TinyViTBlock] = [b for layer in encoder.layers[1:] for b in layer.blocks]
        dims = [block.dim for block in self.attention_blocks]
        self.attention_adapters = build_block_adapters(config, dims, num_slices, skip=True)
        self.mlp_adapters = build_block_adapters(config, dims, num_slices, skip=False)
        self.parallel_scale = config.parallel_scale
        first_attention_dim = encoder.layers[1].dim
        self.depth_embedding = (
            DepthPositionalEmbedding(num_slices, first_attention_dim) if config.encoder_depth_embedding else None
        )
        self.gradient_checkpointing = False
        # True: the adapters sit out (they are zero-initialised, so the encoder computes SAM's features) and the
        # whole encoder runs without autograd: a cheaper first phase of training (DESIGN §10 "cheaper steps").
        self.adapters_paused = False

    @property
    def level_channels(self) -> list[int]:
        return list(self.encoder.stage_channels)

    @property
    def level_sizes(self) -> list[int]:
        return [layer.input_resolution[0] for layer in self.encoder.layers]

    def _block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """One TinyViT block with its adapters: (G*T, L, C) -> (G*T, L, C)."""
        block = self.attention_blocks[index]
        attention = block.attention_branch(tokens)
        if self.attention_adapters:
            attention = self.attention_adapters[index](attention, block.resolution)
        tokens = block.local_conv_step(tokens + attention)
        mlp_out = block.mlp(tokens)
        if self.mlp_adapters:
            mlp_out = mlp_out + self.parallel_scale * self.mlp_adapters[index](block.mlp.norm(tokens), block.resolution)
        return tokens + mlp_out

    def forward(self, slices: torch.Tensor) -> EncoderFeatures:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.adapters_paused):
            return self._features(slices)

    def _features(self, slices: torch.Tensor) -> EncoderFeatures:
        with torch.no_grad():
            stage0 = self.encoder.layers[0]
            stage0_map = stage0.forward_blocks(self.encoder.patch_embed(slices))  # (G*T, C0, S, S)
            tokens = stage0.downsample(stage0_map)  # (G*T, L1, C1)
        if self.depth_embedding is not None:
            tokens = self.depth_embedding(tokens)
        levels = [stage0_map]
        index = 0
        for layer in self.encoder.layers[1:]:
            for _ in layer.blocks:
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    tokens = checkpoint(self._block, index, tokens, use_reentrant=False)
                else:
                    tokens = self._block(index, tokens)
                index += 1
            stage_map = tokens_to_map(tokens, layer.input_resolution)  # (G*T, C_i, H_i, W_i)
            levels.append(stage_map)
            if layer.downsample is not None:
                tokens = layer.downsample(tokens)
        embedding = self.encoder.neck(stage_map)
        return EncoderFeatures(embedding=embedding, levels=levels)
