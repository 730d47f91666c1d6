"""Semantic inference equals a hand-computed loop over slices, classes, pixels and queries."""

from __future__ import annotations

import math

import pytest
import torch

from masksam.inference.semantic import prompted_semantic_scores, semantic_scores


def loop_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Σ_q softmax(class)[q, k] · sigmoid(mask)[q] with explicit Python loops (the definition)."""
    slices, queries, classes_plus_one = class_logits.shape
    height, width = mask_logits.shape[-2:]
    classes = classes_plus_one - 1
    result = torch.zeros(slices, classes, height, width, dtype=torch.float64)
    for g in range(slices):
        for q in range(queries):
            exps = [math.exp(float(v)) for v in class_logits[g, q]]
            for k in range(classes):
                p = exps[k] / sum(exps)
                for h in range(height):
                    for w in range(width):
                        result[g, k, h, w] += p / (1 + math.exp(-float(mask_logits[g, q, h, w])))
    if not include_background:
        for g in range(slices):
            for h in range(height):
                for w in range(width):
                    result[g, 0, h, w] = 1 - max(float(result[g, k, h, w]) for k in range(1, classes))
    return result


@pytest.mark.parametrize("include_background", [True, False], ids=["with-background", "without-background"])
@pytest.mark.parametrize(("slices", "queries", "classes"), [(1, 1, 2), (2, 3, 3), (3, 5, 4)], ids=["1q", "3q", "5q"])
def test_equals_the_loop(slices: int, queries: int, classes: int, include_background: bool) -> None:
    generator = torch.Generator().manual_seed(slices * 10 + queries)
    class_logits = 3 * torch.randn(slices, queries, classes + 1, generator=generator)
    mask_logits = 3 * torch.randn(slices, queries, 4, 5, generator=generator)
    scores = semantic_scores(class_logits, mask_logits, include_background=include_background)
    assert scores.shape == (slices, classes, 4, 5) and scores.dtype == torch.float32
    expected = loop_scores(class_logits, mask_logits, include_background)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("class_logits", "mask_logits", "expected"),
    [
        # softmax(0, ln 3) = (1/4, 3/4): class 0 with probability 1/4; sigmoid(0) = 1/2.
        pytest.param([[[0.0, math.log(3)]]], [[[[0.0]]]], [[[[0.125]]]], id="no-object-takes-most"),
        # Two queries for classes 0 and 1 with equal logits over (c0, c1, none) and masks 1/2 and 1/(1+e^-ln3) = 3/4.
        pytest.param(
            [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]],
            [[[[0.0]], [[math.log(3)]]]],
            [[[[(0.5 + 0.75) / 3]], [[(0.5 + 0.75) / 3]]]],
            id="two-queries-sum",
        ),
    ],
)
def test_hand_computed_values(class_logits, mask_logits, expected) -> None:
    scores = semantic_scores(torch.tensor(class_logits), torch.tensor(mask_logits))
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_bf16_logits_are_scored_in_float32() -> None:
    class_logits = torch.randn(2, 3, 4).bfloat16()
    mask_logits = torch.randn(2, 3, 6, 6).bfloat16()
    scores = semantic_scores(class_logits, mask_logits)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, semantic_scores(class_logits.float(), mask_logits.float()))


@pytest.mark.parametrize("include_background", [True, False], ids=["background-segment", "no-background-segment"])
def test_prompted_scores_take_each_querys_class_from_its_prompt(include_background: bool) -> None:
    mask_logits = torch.randn(2, 3, 4, 5)
    class_ids = torch.tensor([[1, 2, 3], [0, 3, 3]])  # K = 3: id 3 marks a padding query
    scores = prompted_semantic_scores(class_ids, mask_logits, num_classes=3, include_background=include_background)
    one_hot_logits = torch.full((2, 3, 4), -1e4).scatter(2, class_ids[..., None], 1e4)  # certain class heads
    expected = semantic_scores(one_hot_logits, mask_logits, include_background=include_background)
    torch.testing.assert_close(scores, expected)
    masks = mask_logits.sigmoid()
    torch.testing.assert_close(scores[0, 2], masks[0, 1])  # query 1 of slice 0 was prompted with class 2
    if include_background:
        torch.testing.assert_close(scores[1, 0], masks[1, 0])
        assert not scores[1, 1:].any()  # padding queries count for nothing


def test_prompted_overlaps_go_to_the_smaller_box() -> None:
    """A ring's box (the myocardium) gives a disc that also covers the cavity; the cavity's smaller box wins it."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radius = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    disc, cavity = radius < 12, radius < 7
    mask_logits = torch.stack([torch.where(disc, 8.0, -8.0), torch.where(cavity, 8.0, -8.0)])[None]  # (1, 2, H, W)
    boxes = torch.tensor([[[4.0, 4.0, 28.0, 28.0], [9.0, 9.0, 23.0, 23.0]]]) / 32  # (1, 2, 4) ring, cavity
    class_ids = torch.tensor([[2, 3]])  # MYO, LV
    labels = prompted_semantic_scores(
        class_ids, mask_logits, num_classes=4, include_background=False, prompt_boxes=boxes
    ).argmax(dim=1)[0]
    assert (labels[cavity] == 3).all()
    assert (labels[disc & ~cavity] == 2).all()
    assert (labels[~disc] == 0).all()
    summed = prompted_semantic_scores(class_ids, mask_logits, num_classes=4, include_background=False)
    assert (summed.argmax(dim=1)[0][cavity] != 3).any()  # without boxes the disc ties with the cavity


def test_padding_queries_occlude_nothing() -> None:
    mask_logits = torch.full((1, 2, 4, 4), 6.0)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])  # the padding query has the empty box
    scores = prompted_semantic_scores(
        torch.tensor([[1, 3]]), mask_logits, num_classes=3, include_background=False, prompt_boxes=boxes
    )
    torch.testing.assert_close(scores[0, 1], mask_logits[0, 0].sigmoid())
