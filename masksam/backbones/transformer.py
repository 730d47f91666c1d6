"""SAM's two-way transformer (tokens <-> image), with Meta's parameter names.

`TwoWayAttentionBlock.forward` takes optional `BlockAdapters`: callables applied at the four places
where MaskSAM inserts adapters. Without them the block computes exactly SAM's function.

Tokens can be *silent* (MaskSAM's classifier tokens): they attend to every token and to the image, but no
token and no image position attends to them, so SAM's own tokens and image update are exactly what they
would be without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from masksam.backbones.common import MLPBlock, attention

TensorMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BlockAdapters:
    """Optional transforms inside one two-way block (None = absent).

    after_self_attention / after_token_to_image: applied to the attention output before its residual sum.
    parallel_mlp: its output is added beside the MLP's, on the same input.
    after_image_to_token: applied to the image-side attention output before its residual sum.
    """

    after_self_attention: TensorMap | None = None
    after_token_to_image: TensorMap | None = None
    parallel_mlp: TensorMap | None = None
    after_image_to_token: TensorMap | None = None


def _apply(adapter: TensorMap | None, x: torch.Tensor) -> torch.Tensor:
    return x if adapter is None else adapter(x)


def add_positions(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """tokens (B, L, C) + positions (P, L, C), P dividing B: item i gets positions[i % P].

    P = 1 is SAM's case (one encoding shared by every prompt); P = T gives each of T consecutive items
    (slices) its own encoding. Either way the B copies of the encoding are never materialised.
    """
    period = positions.shape[0]
    grouped = tokens.reshape(-1, period, *tokens.shape[1:])  # (B/P, P, L, C)
    return (grouped + positions).view(tokens.shape)


class Attention(nn.Module):
    """Attention with separate q/k/v projections and optional downsampling of the internal width."""

    def __init__(self, *, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"internal width {internal_dim} is not divisible by {num_heads} heads")
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)  # (B, heads, n, d)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q (B, n_q, C), k and v (B, n_k, C) -> (B, n_q, C).

        `allowed`: (n_q or 1, n_k) bool, the keys each query may read (None: all).
        """
        out = attention(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v)), attn_mask=allowed
        )  # (B, heads, n_q, d)
        out = out.transpose(1, 2).flatten(2)  # (B, n_q, internal)
        return self.out_proj(out)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image and image->token cross-attention, and a token MLP."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim=embedding_dim, num_heads=num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim=embedding_dim, mlp_dim=mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim=embedding_dim, num_heads=num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        adapters: BlockAdapters | None = None,
        silent: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, n_tokens, C), keys (B, h*w, C), key_pe (P, h*w, C) with P dividing B
        (see `add_positions`) -> updated (queries, keys). `silent` (n_tokens,) bool marks tokens nobody reads."""
        adapters = adapters or BlockAdapters()
        token_reads = image_reads = None
        if silent is not None:
            token_reads = ~silent[None, :] | silent[:, None]  # (n_tokens, n_tokens): silent ones read everything
            image_reads = ~silent[None, :]  # (1, n_tokens)
        if self.skip_first_layer_pe:
            queries = _apply(adapters.after_self_attention, self.self_attn(queries, queries, queries, token_reads))
        else:
            q = queries + query_pe
            queries = queries + _apply(adapters.after_self_attention, self.self_attn(q, q, queries, token_reads))
        queries = self.norm1(queries)

        # The keys do not change before the image->token attention, so both attentions share keys + key_pe.
        k = add_positions(keys, key_pe)  # (B, h*w, C)
        q = queries + query_pe
        queries = self.norm2(
            queries + _apply(adapters.after_token_to_image, self.cross_attn_token_to_image(q, k, keys))
        )

        mlp_out = self.mlp(queries)
        if adapters.parallel_mlp is not None:
            mlp_out = mlp_out + adapters.parallel_mlp(queries)
        queries = self.norm3(queries + mlp_out)

        q = queries + query_pe
        image_update = self.cross_attn_image_to_token(k, q, queries, image_reads)
        keys = self.norm4(keys + _apply(adapters.after_image_to_token, image_update))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """A stack of two-way blocks followed by a final token->image attention."""

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim, num_heads=num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        layer_adapters: Sequence[BlockAdapters | None] | None = None,
        silent: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          image_embedding: (B, C, h, w).
          image_pe: (P, C, h, w), P dividing B: item i uses image_pe[i % P] (SAM: P = 1).
          point_embedding: (B, n_tokens, C) tokens, used as their own positional encoding.
          layer_adapters: one `BlockAdapters` (or None) per layer.
          silent: (n_tokens,) bool, tokens that read but are never read (see the module docstring), or None.
        Returns:
          processed tokens (B, n_tokens, C) and image tokens (B, h*w, C), contiguous.
        """
        # Contiguous tokens once here (free when the embedding is channels-last in memory) rather than a
        # hidden copy in every linear layer that reads them.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, C)
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # (P, h*w, C)
        queries = point_embedding
        adapters = list(layer_adapters) if layer_adapters is not None else [None] * self.depth
        for layer, layer_adapter in zip(self.layers, adapters, strict=True):
            queries, keys = layer(queries, keys, point_embedding, key_pe, layer_adapter, silent)
        q, k = queries + point_embedding, add_positions(keys, key_pe)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
