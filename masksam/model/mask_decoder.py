"""SAM's frozen mask decoder with global classifier tokens, adapters and a class head (paper §2.6, Fig. 3c).

Queries run as batch elements: every (patch, query, slice) is one decoder item, ordered (B, N, T) so that
the T slices of one query are consecutive and the depth adapters can mix them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from masksam.backbones.mask_decoder import MaskDecoder
from masksam.backbones.transformer import BlockAdapters
from masksam.model.adapters import build_adapter
from masksam.model.config import AdapterConfig
from masksam.model.depth import DepthPositionalEmbedding


@dataclass
class DecodedQueries:
    """class_logits (B*N*T, K+1) and mask_logits (B*N*T, 4h, 4w), in (B, N, T) order."""

    class_logits: torch.Tensor
    mask_logits: torch.Tensor


class AdaptedMaskDecoder(nn.Module):
    """Adds per-query classifier tokens (global + auxiliary), DMLP/DConv adapters, and a K+1 class head."""

    def __init__(
        self,
        decoder: MaskDecoder,
        *,
        num_queries: int,
        num_classes: int,
        num_slices: int,
        config: AdapterConfig,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.num_slices = num_slices
        dim = decoder.transformer_dim
        self.global_classifier_tokens = nn.Embedding(num_queries, dim)
        nn.init.normal_(self.global_classifier_tokens.weight, std=0.02)
        self.class_head = nn.Linear(dim, num_classes + 1)

        def adapters(kind: str, skip: bool) -> nn.ModuleList:
            built = [
                build_adapter(
                    kind,  # type: ignore[arg-type]
                    dim=dim,
                    bottleneck=config.decoder_bottleneck,
                    num_slices=num_slices,
                    depth_mlp_ratio=config.depth_mlp_ratio,
                    skip=skip,
                )
                for _ in decoder.transformer.layers
            ]
            return nn.ModuleList(a for a in built if a is not None)

        self.self_attention_adapters = adapters(config.token_adapter, skip=True)
        self.token_to_image_adapters = adapters(config.token_adapter, skip=True)
        self.mlp_adapters = adapters(config.token_adapter, skip=False)
        self.image_to_token_adapters = adapters(config.image_adapter, skip=True)
        self.parallel_scale = config.parallel_scale
        self.depth_embedding = DepthPositionalEmbedding(num_slices, dim) if config.decoder_depth_embedding else None

    def layer_adapters(self, grid: tuple[int, int]) -> list[BlockAdapters]:
        """The callables each two-way block applies, bound to the image grid (h, w)."""

        def pick(modules: nn.ModuleList, index: int, **bound: object):  # noqa: ANN202
            return partial(modules[index], **bound) if modules else None

        def scaled(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return self.parallel_scale * module(x)

        return [
            BlockAdapters(
                after_self_attention=pick(self.self_attention_adapters, i),
                after_token_to_image=pick(self.token_to_image_adapters, i),
                parallel_mlp=partial(scaled, self.mlp_adapters[i]) if self.mlp_adapters else None,
                after_image_to_token=pick(self.image_to_token_adapters, i, grid=grid),
            )
            for i in range(len(self.decoder.transformer.layers))
        ]

    def classifier_tokens(self, aux_class_tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, T, C) auxiliary tokens of the prompt generator -> (B, N, T, C) global + auxiliary tokens."""
        return self.global_classifier_tokens.weight[None, :, None, :] + aux_class_tokens

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_embeddings: torch.Tensor,
        dense_embeddings: torch.Tensor,
        classifier_tokens: torch.Tensor,
        num_queries: int,
    ) -> DecodedQueries:
        """
        Arguments:
          image_embeddings: (B*T, C, h, w) from the encoder (shared by the Q queries of a slice).
          image_pe: (1, C, h, w) SAM's dense positional encoding.
          sparse_embeddings: (B*Q*T, n, C) box tokens.
          dense_embeddings: (B*Q*T, C, h, w) dense prompts, or (1, C, 1, 1) shared by every query.
          classifier_tokens: (B*Q*T, C), e.g. from `classifier_tokens`.
          num_queries: Q, decoder queries per slice.
        """
        slices, channels, h, w = image_embeddings.shape
        num_slices = self.num_slices
        batch = slices // num_slices
        # Each query's image input (SAM adds the dense prompt to the image embedding), broadcast over the
        # queries: the image embedding is never copied per query. Image first, so the sum keeps its
        # (channels-last) memory layout and the decoder's image tokens are a free view of it.
        if dense_embeddings.shape[0] == 1:
            dense = dense_embeddings.view(1, 1, 1, channels, *dense_embeddings.shape[-2:])
        else:
            dense = dense_embeddings.view(batch, num_queries, num_slices, channels, h, w)
        src = image_embeddings.view(batch, 1, num_slices, channels, h, w) + dense
        src = src.expand(batch, num_queries, num_slices, channels, h, w).reshape(-1, channels, h, w)  # (B*Q*T, C, h, w)
        # One positional encoding per slice; the decoder gives item (b, n, t) entry t (items are (B, N, T)).
        positions = image_pe.expand(num_slices, -1, -1, -1)  # (T, C, h, w)
        if self.depth_embedding is not None:
            positions = self.depth_embedding(positions, channels_last=False)
        out = self.decoder.predict_masks(
            src,
            positions,
            sparse_embeddings,
            None,
            extra_tokens=classifier_tokens.unsqueeze(1),  # (B*Q*T, 1, C)
            layer_adapters=self.layer_adapters((h, w)),
        )
        return DecodedQueries(class_logits=self.class_head(out.extra_tokens[:, 0]), mask_logits=out.masks[:, 0])
