"""SAM's prompt encoder under mixed precision: its Fourier features stay float32."""

from __future__ import annotations

import torch

from masksam.backbones.prompt_encoder import PositionEmbeddingRandom, PromptEncoder


def test_fourier_features_are_float32_under_bf16_autocast() -> None:
    """Arguments of the sines reach ±20 rad, where bf16 shifts a box corner's features by about a pixel's worth."""
    torch.manual_seed(0)
    layer = PositionEmbeddingRandom(64)
    coords = torch.rand(3, 2, 2)
    expected = layer.encode(coords)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoded = layer.encode(coords)
        dense = layer((8, 8))
    assert encoded.dtype == dense.dtype == torch.float32
    torch.testing.assert_close(encoded, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(dense, layer((8, 8)), rtol=0, atol=1e-6)


def test_box_corners_are_embedded_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=8)
    boxes = torch.tensor([[10.25, 20.5, 200.75, 230.125], [0.0, 0.0, 255.0, 255.0]])
    sparse, _ = encoder(boxes=boxes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = encoder(boxes=boxes)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, sparse, rtol=0, atol=1e-6)
