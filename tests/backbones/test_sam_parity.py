"""Parity with Meta's segment-anything: same weights and inputs give the same outputs (within 1e-5).

Its package `__init__` imports torchvision, which does not install beside our torch, so only its
`modeling` subpackage is imported. Skipped cleanly when segment-anything is not installed.
"""

from __future__ import annotations

import pytest
import torch
from helpers import meta_modeling

from masksam.backbones.image_encoder_vit import ImageEncoderViT
from masksam.backbones.mask_decoder import MaskDecoder
from masksam.backbones.prompt_encoder import PromptEncoder
from masksam.backbones.transformer import TwoWayTransformer

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def meta():
    """Meta's `segment_anything.modeling`, imported without running the package `__init__`."""
    with meta_modeling() as modeling:
        yield modeling


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_image_encoder(meta) -> None:
    kwargs = dict(img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2, window_size=3, out_chans=16)
    theirs = meta.ImageEncoderViT(**kwargs, global_attn_indexes=(1,), use_rel_pos=True, qkv_bias=True)
    randomise(theirs)
    ours = ImageEncoderViT(**kwargs, global_attn_indexes=(1,), pretrain_img_size=64)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), atol=TOLERANCE, rtol=0)


def build_prompt_encoders(meta):
    kwargs = dict(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=16)
    theirs = meta.PromptEncoder(**kwargs)
    randomise(theirs, seed=1)
    ours = PromptEncoder(**kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("prompt", ["points", "boxes", "points_and_boxes", "masks"])
def test_prompt_encoder(meta, prompt: str) -> None:
    ours, theirs = build_prompt_encoders(meta)
    generator = torch.Generator().manual_seed(2)
    points = (torch.rand(3, 4, 2, generator=generator) * 64, torch.tensor([[1, 0, -1, 1]] * 3))
    boxes = torch.tensor([[4.0, 5.0, 40.0, 50.0], [0.0, 0.0, 63.0, 63.0], [10.0, 20.0, 11.0, 22.0]])
    masks = torch.randn(3, 1, 32, 32, generator=generator)
    inputs = {
        "points": dict(points=points, boxes=None, masks=None),
        "boxes": dict(points=None, boxes=boxes, masks=None),
        "points_and_boxes": dict(points=points, boxes=boxes, masks=None),
        "masks": dict(points=None, boxes=boxes, masks=masks),
    }[prompt]
    with torch.no_grad():
        our_sparse, our_dense = ours(**inputs)
        their_sparse, their_dense = theirs(**inputs)
        torch.testing.assert_close(our_sparse, their_sparse, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(our_dense, their_dense, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(ours.get_dense_pe(), theirs.get_dense_pe(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("multimask", [False, True])
def test_mask_decoder(meta, multimask: bool) -> None:
    transformer = dict(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    theirs = meta.MaskDecoder(
        transformer_dim=32, transformer=meta.TwoWayTransformer(**transformer), iou_head_hidden_dim=32
    )
    randomise(theirs, seed=3)
    ours = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(**transformer), iou_head_hidden_dim=32)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(4)
    image = torch.randn(1, 32, 8, 8, generator=generator)
    image_pe = torch.randn(1, 32, 8, 8, generator=generator)
    sparse = torch.randn(3, 2, 32, generator=generator)
    dense = torch.randn(3, 32, 8, 8, generator=generator)
    with torch.no_grad():
        our_masks, our_iou = ours(image, image_pe, sparse, dense, multimask_output=multimask)
        their_masks, their_iou = theirs(image, image_pe, sparse, dense, multimask_output=multimask)
    torch.testing.assert_close(our_masks, their_masks, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(our_iou, their_iou, atol=TOLERANCE, rtol=0)
