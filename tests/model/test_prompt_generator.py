"""Prompt generator pieces: box parameterisation, mask -> box, level assignment, output shapes."""

from __future__ import annotations

import pytest
import torch

from masksam.model.config import PromptGeneratorConfig
from masksam.model.prompt_generator import (
    PromptGenerator,
    assign_levels,
    centred_box,
    expand_boxes,
    largest_components,
    mask_to_box,
)


def test_centred_box_is_valid_for_any_input() -> None:
    boxes = centred_box(torch.randn(1000, 4) * 10)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_mask_to_box_equals_hand_computed_boxes() -> None:
    logits = torch.full((2, 3, 8, 10), -5.0)
    logits[0, 0, 2:5, 3:7] = 5.0  # rows 2..4, columns 3..6
    logits[0, 1, 7, 9] = 5.0  # one pixel in the corner
    logits[1, 2, 0:8, 0:10] = 5.0  # everything
    boxes, nonempty = mask_to_box(logits)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([3 / 10, 2 / 8, 7 / 10, 5 / 8]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([9 / 10, 7 / 8, 1.0, 1.0]))
    torch.testing.assert_close(boxes[1, 2], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert nonempty.tolist() == [[True, True, False], [False, False, True]]
    torch.testing.assert_close(boxes[0, 2], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # empty -> whole image


def test_expand_boxes_moves_every_edge_outward_and_stays_in_the_image() -> None:
    boxes = torch.tensor([[0.2, 0.3, 0.5, 0.6], [0.005, 0.0, 1.0, 0.995]])
    expected = torch.tensor([[0.19, 0.29, 0.51, 0.61], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(expand_boxes(boxes, 0.01), expected)
    assert expand_boxes(boxes, 0.0) is boxes


def test_largest_component_box_ignores_stray_islands() -> None:
    logits = torch.full((2, 2, 16, 16), -5.0)
    logits[0, 0, 4:10, 5:12] = 5.0  # the organ: rows 4..9, columns 5..11
    logits[0, 0, 14, 0] = 5.0  # a stray pixel that would stretch its box to the corner
    logits[0, 1, 1:3, 1:3] = 5.0  # a map whose largest component is the second one in raster order
    logits[0, 1, 8:14, 2:15] = 5.0
    logits[1, 0, 3, 3] = 5.0  # a single pixel is its own largest component
    boxes, nonempty = mask_to_box(logits, largest_component=True)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([5 / 16, 4 / 16, 12 / 16, 10 / 16]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([2 / 16, 8 / 16, 15 / 16, 14 / 16]))
    torch.testing.assert_close(boxes[1, 0], torch.tensor([3 / 16, 3 / 16, 4 / 16, 4 / 16]))
    assert nonempty.tolist() == [[True, True], [True, False]]
    everything, _ = mask_to_box(logits)
    torch.testing.assert_close(everything[0, 0], torch.tensor([0.0, 4 / 16, 12 / 16, 15 / 16]))


def test_largest_components_count_diagonal_neighbours_as_connected() -> None:
    staircase = torch.eye(6, dtype=torch.bool)[None]  # one 8-connected diagonal line
    staircase[0, 0, 5] = True  # a lone pixel
    kept = largest_components(staircase)
    assert kept[0].diagonal().all() and not kept[0, 0, 5]


@pytest.mark.parametrize(
    ("sizes", "embedding", "steps", "expected"),
    [
        pytest.param([16, 16, 16, 16], 16, 4, [4, 3, 2, 1], id="isotropic-vit"),
        pytest.param([16, 16], 16, 4, [2, 1], id="two-levels"),
        pytest.param([256, 128, 64, 64], 64, 2, [2, 1, 0, 0], id="tiny-vit-stages"),
    ],
)
def test_level_assignment(sizes, embedding: int, steps: int, expected: list[int]) -> None:
    assert assign_levels(sizes, embedding, steps) == expected


def test_outputs_have_one_prompt_per_query_and_slice() -> None:
    generator = PromptGenerator(
        level_channels=[8, 8],
        level_sizes=[4, 4],
        embedding_channels=16,
        embedding_size=4,
        image_size=16,
        num_queries=5,
        token_dim=16,
        config=PromptGeneratorConfig(widths=(16, 8, 8)),
    )
    batch, slices = 2, 3
    prompts = generator(torch.randn(batch * slices, 16, 4, 4), [torch.randn(batch * slices, 8, 4, 4)] * 2, slices)
    assert prompts.aux_mask_logits.shape == (batch, 5, slices, 16, 16)
    assert prompts.boxes.shape == (batch, 5, slices, 4)
    assert prompts.class_tokens.shape == (batch, 5, slices, 16)


def test_boxes_are_computed_in_float32_under_bf16_autocast() -> None:
    """The learned boxes become prompt-encoder corners: bf16 would round them by up to 1/256 of the image."""
    torch.manual_seed(0)
    generator = PromptGenerator(
        level_channels=[8, 8],
        level_sizes=[4, 4],
        embedding_channels=16,
        embedding_size=4,
        image_size=16,
        num_queries=5,
        token_dim=16,
        config=PromptGeneratorConfig(widths=(16, 8, 8)),
    )
    head_dtypes = []
    generator.box_head.register_forward_hook(lambda module, args, output: head_dtypes.append(output.dtype))
    inputs = (torch.randn(6, 16, 4, 4), [torch.randn(6, 8, 4, 4)] * 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prompts = generator(*inputs)
    assert head_dtypes == [torch.float32] and prompts.boxes.dtype == torch.float32
    # The 3-D convolutions run in float32 on the CPU (oneDNN's bf16 3-D conv gradients hung on an AMX CPU);
    # the class tokens' head stays in bf16.
    assert prompts.aux_mask_logits.dtype == torch.float32 and prompts.class_tokens.dtype == torch.bfloat16
