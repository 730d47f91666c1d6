"""SAM's mask decoder, with Meta's parameter names.

`predict_masks` accepts extra output tokens (MaskSAM's classifier tokens) and per-layer adapters for the
two-way transformer, and returns those tokens' outputs beside SAM's masks and IoU predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.common import LayerNorm2d
from masksam.backbones.transformer import BlockAdapters, TwoWayTransformer


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (`layers.i` as in SAM's checkpoints)."""

    def __init__(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:] + [output_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


@dataclass
class DecoderOutput:
    """What one call of `MaskDecoder.predict_masks` returns.

    masks: (B, num_mask_tokens, 4h, 4w) mask logits.
    iou_predictions: (B, num_mask_tokens).
    extra_tokens: (B, n_extra, C) outputs of the extra tokens (empty when none were given).
    """

    masks: torch.Tensor
    iou_predictions: torch.Tensor
    extra_tokens: torch.Tensor


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompt embeddings with a two-way transformer."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(
                input_dim=transformer_dim,
                hidden_dim=transformer_dim,
                output_dim=transformer_dim // 8,
                num_layers=3,
            )
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            input_dim=transformer_dim,
            hidden_dim=iou_head_hidden_dim,
            output_dim=self.num_mask_tokens,
            num_layers=iou_head_depth,
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        extra_tokens: torch.Tensor | None = None,
        layer_adapters: Sequence[BlockAdapters | None] | None = None,
    ) -> DecoderOutput:
        """
        Arguments:
          image_embeddings: (B, C, h, w), or (1, C, h, w) shared by all B prompts (SAM's usage).
          image_pe: (P, C, h, w), P dividing B: prompt i uses image_pe[i % P] (SAM: P = 1).
          sparse_prompt_embeddings: (B, n, C).
          dense_prompt_embeddings: (B, C, h, w), or None when the caller has already added them to
            `image_embeddings` (then (B, C, h, w)).
          extra_tokens: (B, n_extra, C) tokens appended after SAM's output tokens, or None. They are silent
            (see `masksam.backbones.transformer`): SAM's masks are the same with or without them.
          layer_adapters: per-layer adapters of the two-way transformer, or None.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # (1 + M, C)
        parts = [output_tokens.unsqueeze(0).expand(batch, -1, -1)]
        n_extra = 0 if extra_tokens is None else extra_tokens.shape[1]
        if extra_tokens is not None:
            parts.append(extra_tokens)
        tokens = torch.cat([*parts, sparse_prompt_embeddings], dim=1)  # (B, 1 + M + n_extra + n, C)

        if dense_prompt_embeddings is None:
            src = image_embeddings
        else:
            src = image_embeddings + dense_prompt_embeddings  # (B, C, h, w); broadcasts a shared embedding
        channels, h, w = src.shape[1:]
        silent = None
        if n_extra:
            silent = torch.zeros(tokens.shape[1], dtype=torch.bool, device=tokens.device)
            silent[1 + self.num_mask_tokens : 1 + self.num_mask_tokens + n_extra] = True
        hs, src = self.transformer(src, image_pe, tokens, layer_adapters, silent)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        extra_out = hs[:, 1 + self.num_mask_tokens : 1 + self.num_mask_tokens + n_extra, :]

        src = src.transpose(1, 2).reshape(batch, channels, h, w)  # a channels-last view of the (B, h*w, C) tokens
        upscaled = self.output_upscaling(src)  # (B, C/8, 4h, 4w), channels-last in memory
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, M, C/8)
        b, c, uh, uw = upscaled.shape
        # Pixel-major product: (B, 4h*4w, C/8) is a view of the channels-last map, and the gradient the map
        # receives in training comes out in that same layout (no layout conversion in the backward pass).
        pixels = upscaled.permute(0, 2, 3, 1).reshape(b, uh * uw, c)
        masks = (pixels @ hyper_in.transpose(1, 2)).transpose(1, 2).view(b, -1, uh, uw)  # (B, M, 4h, 4w)
        return DecoderOutput(
            masks=masks, iou_predictions=self.iou_prediction_head(iou_token_out), extra_tokens=extra_out
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's interface: returns (masks (B, 1 or 3, 4h, 4w), iou_predictions (B, 1 or 3))."""
        out = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return out.masks[:, selected], out.iou_predictions[:, selected]
