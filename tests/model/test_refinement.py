"""Prompt refinement: each query's segment becomes its next box and mask prompt, decoded exactly as the
training's denoising queries were; empty segments keep their first pass."""

from __future__ import annotations

import pytest
import torch

from masksam.model.config import preset_config
from masksam.model.masksam import DenoisingPrompts, build_masksam
from masksam.model.refinement import MASK_PROMPT_LOGIT, query_segments, segment_prompts


def logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """(G=1, N, K+1) class logits whose softmax is `probabilities`."""
    return torch.tensor(probabilities).log()[None]


def test_segments_are_the_semantic_winners_above_one_half() -> None:
    # K = 3 classes (0 background) + "no object"; 3 queries on a 1 x 4 image.
    class_logits = logits_for(
        [
            [0.01, 0.97, 0.01, 0.01],  # query 0: class 1
            [0.01, 0.01, 0.97, 0.01],  # query 1: class 2
            [0.97, 0.01, 0.01, 0.01],  # query 2: background
        ]
    )
    mask_logits = torch.tensor(
        [
            [[4.0, 4.0, -4.0, -4.0]],
            [[-4.0, 5.0, 4.0, -4.0]],  # pixel 1: beats query 0
            [[9.0, 9.0, 9.0, 9.0]],  # a background query owns nothing
        ]
    )[None]  # (1, 3, 1, 4)
    segments = query_segments(class_logits, mask_logits, include_background=True)
    assert segments[0, :, 0].tolist() == [
        [True, False, False, False],
        [False, True, True, False],
        [False, False, False, False],
    ]
    assert segments.sum(dim=1).max() <= 1  # at most one query per pixel
    # The same scores below one half own nothing.
    weak = logits_for([[0.5, 0.3, 0.1, 0.1]] * 3)
    assert not query_segments(weak, mask_logits, include_background=True).any()


def test_without_background_segments_every_foreground_class_counts() -> None:
    class_logits = logits_for([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05]])  # K = 2 (no background segment) + no object
    mask_logits = torch.tensor([[[5.0, -5.0]], [[-5.0, 5.0]]])[None]  # (1, 2, 1, 2)
    segments = query_segments(class_logits, mask_logits, include_background=False)
    assert segments[0, :, 0].tolist() == [[True, False], [False, True]]


def test_segment_prompts_box_the_largest_component_and_mask_it_cleanly() -> None:
    segments = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    segments[0, 0, 2:5, 1:4] = True  # 3 x 3 block
    segments[0, 0, 7, 7] = True  # a stray pixel: not in the box
    boxes, masks, nonempty = segment_prompts(segments, mask_size=16)
    assert nonempty.tolist() == [[True, False]]
    assert torch.allclose(boxes[0, 0], torch.tensor([1 / 8, 2 / 8, 4 / 8, 5 / 8]))
    assert masks.shape == (1, 2, 16, 16) and set(masks.unique().tolist()) == {-MASK_PROMPT_LOGIT, MASK_PROMPT_LOGIT}
    assert torch.equal(masks[0, 0] > 0, segments[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert (masks[0, 1] < 0).all()
    assert segment_prompts(segments, mask_size=None)[1] is None


@pytest.mark.parametrize("queries", ["matched", "class_slots"])
def test_a_refinement_pass_decodes_each_segment_as_a_denoising_query(queries: str) -> None:
    """The refined queries are exactly what the denoising path (trained in every step) gives for the first pass's
    segments."""
    config = preset_config("tiny")
    if queries == "class_slots":  # one query per foreground class
        config = preset_config("tiny", queries=queries, include_background=False, num_queries=config.num_classes - 1)
    torch.manual_seed(0)
    model = build_masksam(config).eval()
    with torch.no_grad():  # every query sure of a foreground class: segments are where its mask wins
        model.mask_decoder.class_head.bias.copy_(torch.tensor([0.0, 8.0] + [0.0] * (config.num_classes - 1)))
        volume = torch.randn(1, 1, *config.patch_size)
        first = model(volume)
        refined = model(volume, refinement_passes=1)
        segments = query_segments(first.class_logits, first.mask_logits, include_background=config.include_background)
        boxes, masks, nonempty = segment_prompts(segments, config.image_size)
        slices = config.num_slices

        def per_query(x: torch.Tensor) -> torch.Tensor:  # (B*T, N, ...) -> (B, N, T, ...)
            return x.reshape(-1, slices, *x.shape[1:]).transpose(1, 2)

        slots = torch.arange(config.num_queries) if queries == "class_slots" else None
        denoised = model(
            volume, denoising=DenoisingPrompts(boxes=per_query(boxes), masks=per_query(masks), slots=slots)
        )
    assert nonempty.any()
    keep = nonempty[..., None, None]
    assert torch.allclose(refined.mask_logits, torch.where(keep, denoised.denoising_mask_logits, first.mask_logits))
    expected_classes = torch.where(nonempty[..., None], denoised.denoising_class_logits, first.class_logits)
    assert torch.allclose(refined.class_logits, expected_classes)
    assert torch.equal(refined.prompt_boxes, torch.where(nonempty[..., None], boxes, first.prompt_boxes))
    assert torch.equal(refined.aux_mask_logits, first.aux_mask_logits)


def test_queries_the_model_calls_no_object_keep_their_first_pass() -> None:
    config = preset_config("tiny")
    torch.manual_seed(0)
    model = build_masksam(config).eval()
    with torch.no_grad():
        model.mask_decoder.class_head.bias.copy_(torch.tensor([0.0] * config.num_classes + [8.0]))  # "no object"
        volume = torch.randn(1, 1, *config.patch_size)
        first, refined = model(volume), model(volume, refinement_passes=2)
    for name in ("class_logits", "mask_logits", "prompt_boxes"):
        assert torch.equal(getattr(refined, name), getattr(first, name))


def test_refinement_is_refused_with_ground_truth_prompts_or_denoising_queries() -> None:
    config = preset_config("tiny", prompt_mode="ground_truth")
    model = build_masksam(config).eval()
    volume = torch.randn(1, 1, *config.patch_size)
    boxes = torch.tensor([0.1, 0.1, 0.5, 0.5]).expand(config.num_slices, config.num_queries, 4)
    with pytest.raises(ValueError, match="refinement passes"):
        model(volume, boxes, refinement_passes=1)
