"""AdaptedMaskDecoder: broadcasting the image embedding over queries and the positional encoding over
(patch, query) gives what SAM's decoder computes when every item's inputs are written out in full."""

from __future__ import annotations

import torch

from masksam.model.config import preset_config
from masksam.model.masksam import build_masksam


def test_broadcast_inputs_equal_explicit_per_item_inputs() -> None:
    config = preset_config("tiny", patch_size=(3, 64, 64), num_queries=2)
    torch.manual_seed(0)
    adapted = build_masksam(config).mask_decoder.eval()
    with torch.no_grad():
        for parameter in adapted.parameters():  # zero-initialised adapters and tables would hide mistakes
            parameter.normal_(0, 0.1)
    batch, queries, slices = 2, config.num_queries, config.num_slices
    items = batch * queries * slices
    channels, h, w = adapted.decoder.transformer_dim, 4, 4
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(batch * slices, channels, h, w, generator=generator)
    image_pe = torch.randn(1, channels, h, w, generator=generator)
    sparse = torch.randn(items, 2, channels, generator=generator)
    dense = torch.randn(items, channels, h, w, generator=generator)
    aux_tokens = torch.randn(items, channels, generator=generator)

    # Explicit inputs of item (b, n, t): image slice b*T + t, positions + depth row t, global token n.
    b, n, t = torch.meshgrid(torch.arange(batch), torch.arange(queries), torch.arange(slices), indexing="ij")
    b, n, t = b.flatten(), n.flatten(), t.flatten()
    per_item_image = image[b * slices + t]  # (B*N*T, C, h, w)
    per_item_positions = image_pe + adapted.depth_embedding.table[t][:, :, None, None]
    classifier = (adapted.global_classifier_tokens.weight[n] + aux_tokens)[:, None]  # (B*N*T, 1, C)
    with torch.no_grad():
        expected = adapted.decoder.predict_masks(
            per_item_image,
            per_item_positions,
            sparse,
            dense,
            extra_tokens=classifier,
            layer_adapters=adapted.layer_adapters((h, w)),
        )
        tokens = adapted.classifier_tokens(aux_tokens.view(batch, queries, slices, channels))  # (B, N, T, C)
        decoded = adapted(image, image_pe, sparse, dense, tokens.reshape(items, channels), queries)
    torch.testing.assert_close(decoded.mask_logits, expected.masks[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decoded.class_logits, adapted.class_head(expected.extra_tokens[:, 0]))
