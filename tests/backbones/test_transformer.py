"""Tests of the two-way transformer and mask decoder extensions: periodic positional encodings, pre-added
dense prompts. SAM's own behaviour is checked against Meta's code in test_sam_parity.py."""

from __future__ import annotations

import pytest
import torch

from masksam.backbones.mask_decoder import MaskDecoder
from masksam.backbones.transformer import TwoWayTransformer, add_positions


@pytest.mark.parametrize(
    ("batch", "period"),
    [pytest.param(6, 1, id="shared"), pytest.param(6, 3, id="per-slice"), pytest.param(6, 6, id="per-item")],
)
def test_add_positions_gives_item_i_entry_i_mod_p(batch, period):
    tokens = torch.randn(batch, 5, 4)
    positions = torch.randn(period, 5, 4)
    expected = torch.stack([tokens[i] + positions[i % period] for i in range(batch)])
    torch.testing.assert_close(add_positions(tokens, positions), expected, rtol=0, atol=0)


def small_decoder(seed: int = 0) -> MaskDecoder:
    torch.manual_seed(seed)
    transformer = TwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    decoder = MaskDecoder(transformer_dim=32, transformer=transformer, iou_head_hidden_dim=32).eval()
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.normal_(0, 0.1)
    return decoder


def test_periodic_image_pe_and_pre_added_dense_prompt_equal_sam_usage():
    """(T, C, h, w) encodings and image + dense added by the caller == every item given in full (P = B)."""
    decoder = small_decoder()
    groups, slices = 2, 3
    batch = groups * slices
    image = torch.randn(batch, 32, 8, 8)
    image_pe = torch.randn(slices, 32, 8, 8)
    sparse = torch.randn(batch, 2, 32)
    dense = torch.randn(batch, 32, 8, 8)
    extra = torch.randn(batch, 1, 32)
    with torch.no_grad():
        full = decoder.predict_masks(image, image_pe.repeat(groups, 1, 1, 1), sparse, dense, extra_tokens=extra)
        periodic = decoder.predict_masks(image + dense, image_pe, sparse, None, extra_tokens=extra)
    for name in ("masks", "iou_predictions", "extra_tokens"):
        torch.testing.assert_close(getattr(periodic, name), getattr(full, name), rtol=1e-5, atol=1e-5)
    assert periodic.masks.shape == (batch, 4, 32, 32)


def test_shared_image_embedding_broadcasts_over_prompts():
    decoder = small_decoder(seed=1)
    image, image_pe = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    sparse, dense = torch.randn(3, 2, 32), torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        shared = decoder.predict_masks(image, image_pe, sparse, dense)
        repeated = decoder.predict_masks(image.expand(3, -1, -1, -1), image_pe, sparse, dense)
    torch.testing.assert_close(shared.masks, repeated.masks, rtol=0, atol=1e-6)
