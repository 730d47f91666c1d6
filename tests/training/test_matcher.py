"""Hungarian matcher: cost terms against per-pair references, assignments against brute force, GIoU, points."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from masksam.data.targets import SliceTargets
from masksam.model.masksam import MaskSamOutput
from masksam.training.matcher import HungarianMatcher, MatchCosts, generalized_box_iou, prompt_matching
from masksam.training.point_sampling import random_points, read_points

EVERY_PIXEL = 10_000  # more points than pixels in these tests: the cost uses every pixel


def _random_boxes(*shape: int, generator: torch.Generator) -> torch.Tensor:
    corners = torch.rand(*shape, 2, 2, generator=generator).sort(dim=-2).values  # (..., (low, high), (x, y))
    return corners.flatten(-2)  # (..., 4) as (x1, y1, x2, y2)


def _random_case(
    valid_counts: list[int], *, num_queries: int, num_classes: int = 3, size: tuple[int, int] = (5, 6), seed: int = 0
) -> tuple[MaskSamOutput, SliceTargets]:
    """Random predictions and targets; valid segments of a slice sit at random (not leading) slots."""
    generator = torch.Generator().manual_seed(seed)
    num_slices = len(valid_counts)
    height, width = size
    valid = torch.zeros(num_slices, num_queries, dtype=torch.bool)
    for slice_index, count in enumerate(valid_counts):
        valid[slice_index, torch.randperm(num_queries, generator=generator)[:count]] = True
    class_ids = torch.randint(0, num_classes, (num_slices, num_queries), generator=generator)
    class_ids = torch.where(valid, class_ids, num_classes)
    masks = (torch.rand(num_slices, num_queries, height, width, generator=generator) > 0.5) & valid[..., None, None]
    boxes = _random_boxes(num_slices, num_queries, generator=generator) * valid[..., None]
    outputs = MaskSamOutput(
        class_logits=torch.randn(num_slices, num_queries, num_classes + 1, generator=generator),
        mask_logits=torch.randn(num_slices, num_queries, height, width, generator=generator) * 3,
        aux_mask_logits=torch.randn(num_slices, num_queries, height, width, generator=generator) * 3,
        aux_boxes=_random_boxes(num_slices, num_queries, generator=generator),
        prompt_boxes=_random_boxes(num_slices, num_queries, generator=generator),
    )
    return outputs, SliceTargets(class_ids=class_ids, masks=masks, boxes=boxes, valid=valid)


def _reference_cost(
    outputs: MaskSamOutput, targets: SliceTargets, costs: MatchCosts, points: torch.Tensor | None
) -> torch.Tensor:
    """The cost pair by pair with library losses (slow, independent of the batched formulas)."""
    num_slices, num_queries = outputs.class_logits.shape[:2]
    num_targets = targets.class_ids.shape[1]
    reference = torch.zeros(num_slices, num_queries, num_targets)
    probs = outputs.class_logits.softmax(-1)
    for g, i, j in itertools.product(range(num_slices), range(num_queries), range(num_targets)):
        slice_points = None if points is None else points[g : g + 1]
        target = read_points(targets.masks[g : g + 1, j : j + 1].float(), slice_points).flatten()
        terms = -costs.classification * probs[g, i, targets.class_ids[g, j]]
        for logits, bce_weight, dice_weight in (
            (outputs.mask_logits, costs.mask_bce, costs.mask_dice),
            (outputs.aux_mask_logits, costs.aux_mask_bce, costs.aux_mask_dice),
        ):
            values = read_points(logits[g : g + 1, i : i + 1], slice_points).flatten()
            bce = F.binary_cross_entropy_with_logits(values, target)
            prob = values.sigmoid()
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            terms = terms + bce_weight * bce + dice_weight * dice
        predicted_box, target_box = outputs.aux_boxes[g, i], targets.boxes[g, j]
        terms = terms + costs.box_l1 * (predicted_box - target_box).abs().sum()
        terms = terms - costs.box_giou * generalized_box_iou(predicted_box, target_box)
        reference[g, i, j] = terms
    return reference


def _brute_force_minimum(cost: torch.Tensor, valid: torch.Tensor) -> float:
    """Smallest total cost of assigning distinct predictions (rows) to every valid column."""
    columns = valid.nonzero().flatten().tolist()
    if not columns:
        return 0.0
    return min(
        sum(float(cost[row, column]) for row, column in zip(rows, columns, strict=True))
        for rows in itertools.permutations(range(cost.shape[0]), len(columns))
    )


@pytest.mark.parametrize(
    "costs",
    [
        pytest.param(MatchCosts(), id="design-weights"),
        pytest.param(MatchCosts(classification=1.0, mask_bce=0, mask_dice=2, box_l1=0, box_giou=3), id="other"),
    ],
)
def test_cost_on_every_pixel_equals_per_pair_reference(costs: MatchCosts) -> None:
    outputs, targets = _random_case([2, 0, 4], num_queries=4)
    cost = HungarianMatcher(costs=costs, num_points=EVERY_PIXEL).cost_matrix(outputs, targets)
    assert cost.shape == (3, 4, 4) and cost.dtype == torch.float32
    torch.testing.assert_close(cost, _reference_cost(outputs, targets, costs, None), rtol=1e-5, atol=1e-5)


def test_cost_on_random_points_uses_one_point_set_per_slice() -> None:
    outputs, targets = _random_case([3, 1], num_queries=3, size=(12, 10))
    matcher = HungarianMatcher(num_points=17)
    cost = matcher.cost_matrix(outputs, targets, generator=torch.Generator().manual_seed(5))
    points = random_points(2, 17, device="cpu", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(cost, _reference_cost(outputs, targets, matcher.costs, points), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("valid_counts", "num_queries"),
    [
        pytest.param([2, 0, 5, 1], 5, id="empty-and-full-slices"),
        pytest.param([3, 3], 3, id="every-query-matched"),
        pytest.param([0, 0], 4, id="no-segments-at-all"),
        pytest.param([1, 4, 2], 6, id="six-queries"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_equals_brute_force(valid_counts: list[int], num_queries: int, seed: int) -> None:
    outputs, targets = _random_case(valid_counts, num_queries=num_queries, seed=seed)
    matcher = HungarianMatcher(num_points=EVERY_PIXEL)
    cost = matcher.cost_matrix(outputs, targets)
    indices = matcher(outputs, targets)

    assert len(indices) == sum(valid_counts)
    for tensor in (indices.slice_index, indices.prediction_index, indices.target_index):
        assert tensor.dtype == torch.long
    assert indices.slice_index.tolist() == sorted(indices.slice_index.tolist())
    for g, count in enumerate(valid_counts):
        in_slice = indices.slice_index == g
        rows, columns = indices.prediction_index[in_slice], indices.target_index[in_slice]
        assert sorted(columns.tolist()) == targets.valid[g].nonzero().flatten().tolist()
        assert len(set(rows.tolist())) == count  # one-to-one
        total = float(cost[g, rows, columns].sum())
        assert total == pytest.approx(_brute_force_minimum(cost[g], targets.valid[g]), abs=1e-5)


def test_shuffled_perfect_predictions_are_recovered() -> None:
    _, targets = _random_case([4, 2], num_queries=4, size=(8, 8), seed=3)
    permutation = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])  # prediction i shows target permutation[g, i]
    gather = permutation[..., None, None].expand(-1, -1, 8, 8)
    exact = torch.gather(targets.masks, 1, gather).float() * 20 - 10  # (G, N, H, W) logits ±10
    class_logits = F.one_hot(torch.gather(targets.class_ids, 1, permutation), 4).float() * 10
    boxes = torch.gather(targets.boxes, 1, permutation[..., None].expand(-1, -1, 4))
    outputs = MaskSamOutput(class_logits, exact, exact.clone(), boxes, boxes)
    indices = HungarianMatcher(num_points=EVERY_PIXEL)(outputs, targets)
    assert len(indices) == 6
    shown = permutation[indices.slice_index, indices.prediction_index]  # target shown by each matched prediction
    assert torch.equal(shown, indices.target_index)


def test_bfloat16_outputs_match_in_float32() -> None:
    outputs, targets = _random_case([3, 2, 1], num_queries=4)
    halves = MaskSamOutput(*(None if t is None else t.bfloat16() for t in vars(outputs).values()))
    widened = MaskSamOutput(*(None if t is None else t.float() for t in vars(halves).values()))
    matcher = HungarianMatcher(num_points=EVERY_PIXEL)
    cost = matcher.cost_matrix(halves, targets)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, matcher.cost_matrix(widened, targets))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = matcher.cost_matrix(widened, targets)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, matcher.cost_matrix(widened, targets))


def test_errors_name_the_problem() -> None:
    outputs, targets = _random_case([2], num_queries=2)
    outputs.mask_logits[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        HungarianMatcher(num_points=EVERY_PIXEL)(outputs, targets)
    outputs, targets = _random_case([3], num_queries=3)
    crowded = MaskSamOutput(
        *(None if t is None else t[:, :2] for t in vars(outputs).values())
    )  # 2 queries for 3 segments
    with pytest.raises(ValueError, match="only 2 queries"):
        HungarianMatcher(num_points=EVERY_PIXEL)(crowded, targets)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_outputs_are_paired_when_tolerated(bad: float) -> None:
    """fp16 training: one overflow must not end the run; the pairs are still one-to-one over the real segments,
    and the step's non-finite loss is what GradScaler skips."""
    outputs, targets = _random_case([2, 1, 0], num_queries=3)
    outputs.mask_logits[0, 1] = bad
    outputs.class_logits[1] = bad
    matching = HungarianMatcher(num_points=EVERY_PIXEL, tolerate_non_finite=True)(outputs, targets)
    assert matching.slice_index.tolist() == [0, 0, 1]
    for g in (0, 1):
        rows = matching.prediction_index[matching.slice_index == g].tolist()
        columns = matching.target_index[matching.slice_index == g].tolist()
        assert len(set(rows)) == len(rows)
        assert sorted(columns) == targets.valid[g].nonzero().flatten().tolist()
    with pytest.raises(ValueError, match="not finite"):  # other runs: NaN outputs mean divergence
        HungarianMatcher(num_points=EVERY_PIXEL)(outputs, targets)


@pytest.mark.parametrize(
    ("box1", "box2", "expected"),
    [
        pytest.param([0, 0, 2, 2], [0, 0, 2, 2], 1.0, id="identical"),
        pytest.param([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7 - 2 / 9, id="overlapping"),
        pytest.param([0, 0, 1, 1], [2, 0, 3, 1], 0 - 1 / 3, id="disjoint"),
        pytest.param([0, 0, 1, 1], [0.25, 0.25, 0.75, 0.75], 0.25, id="nested"),
        pytest.param([0, 0, 0, 0], [0, 0, 0, 0], 0.0, id="two-zero-boxes"),
        pytest.param([0, 0, 0, 0], [0, 0, 1, 1], 0.0, id="zero-box-in-corner"),
        pytest.param([0.5, 0, 0.5, 1], [0, 0, 1, 1], 0.0, id="zero-width-line"),
    ],
)
def test_generalized_box_iou(box1: list[float], box2: list[float], expected: float) -> None:
    first = torch.tensor(box1, dtype=torch.float32, requires_grad=True)
    giou = generalized_box_iou(first, torch.tensor(box2, dtype=torch.float32))
    assert giou.item() == pytest.approx(expected, abs=1e-6)
    giou.backward()
    assert torch.isfinite(first.grad).all()


def test_generalized_box_iou_broadcasts_pairwise() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes1, boxes2 = _random_boxes(3, generator=generator), _random_boxes(5, generator=generator)
    pairwise = generalized_box_iou(boxes1[:, None], boxes2[None])
    assert pairwise.shape == (3, 5)
    assert float(pairwise[1, 4]) == pytest.approx(float(generalized_box_iou(boxes1[1], boxes2[4])))
    assert (pairwise <= 1).all() and (pairwise >= -1).all()


def test_read_points_at_pixel_centres_returns_pixel_values() -> None:
    height, width = 3, 5
    values = torch.arange(2 * height * width, dtype=torch.float32).reshape(1, 2, height, width)
    rows, columns = torch.tensor([0, 2, 1, 2]), torch.tensor([0, 4, 3, 1])
    points = torch.stack([(columns + 0.5) / width, (rows + 0.5) / height], dim=-1)[None]  # (1, 4, 2) as (x, y)
    sampled = read_points(values, points)
    assert sampled.shape == (1, 2, 4)
    torch.testing.assert_close(sampled[0], values[0][:, rows, columns])
    midway = read_points(values, torch.tensor([[[1 / width, 0.5 / height]]]))  # between columns 0 and 1
    assert float(midway[0, 0, 0]) == pytest.approx(0.5)
    assert torch.equal(read_points(values, None), values.flatten(2))


def test_read_points_repeats_edge_values_at_the_border() -> None:
    values = torch.ones(1, 1, 4, 4)
    corners = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    assert torch.allclose(read_points(values, corners), torch.ones(1, 1, 3))
    assert not math.isnan(float(read_points(values, corners).sum()))


def test_prompt_matching_pairs_each_valid_slot_with_its_query() -> None:
    valid = torch.tensor([[True, True, False, False], [False, False, False, False], [True, True, True, False]])
    matching = prompt_matching(valid)
    assert matching.slice_index.tolist() == [0, 0, 2, 2, 2]
    assert matching.prediction_index.tolist() == [0, 1, 0, 1, 2]
    assert matching.target_index.tolist() == matching.prediction_index.tolist()
    assert len(prompt_matching(torch.zeros(2, 3, dtype=torch.bool))) == 0
