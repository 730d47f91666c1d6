"""Set criterion: hand-computed normalisation, perfect predictions, descent, edge cases, dtypes, DDP count."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from masksam.data.targets import SliceTargets, build_targets
from masksam.model.masksam import MaskSamOutput
from masksam.model.prompt_generator import centred_box
from masksam.training.criterion import LossTerms, LossWeights, SetCriterion, number_of_segments
from masksam.training.matcher import MatchCosts, MatchIndices
from masksam.training.point_sampling import PointSamplingConfig, uncertain_points

EVERY_PIXEL = PointSamplingConfig(num_points=10_000)  # more points than pixels: exact losses
TERMS = [
    "classification",
    "mask_bce",
    "mask_dice",
    "aux_mask_bce",
    "aux_mask_dice",
    "box_l1",
    "box_giou",
    "denoising_classification",
    "denoising_mask_bce",
    "denoising_mask_dice",
]


def _bce(logit: float, target: float) -> float:
    probability = 1 / (1 + math.exp(-logit))
    return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))


def _mean_bce(logits: list[float], targets: list[float]) -> float:
    return sum(_bce(x, t) for x, t in zip(logits, targets, strict=True)) / len(logits)


def _dice(logits: list[float], targets: list[float]) -> float:
    probabilities = [1 / (1 + math.exp(-x)) for x in logits]
    overlap = sum(p * t for p, t in zip(probabilities, targets, strict=True))
    return 1 - (2 * overlap + 1) / (sum(probabilities) + sum(targets) + 1)


def _tiny_batch() -> tuple[MaskSamOutput, SliceTargets, MatchIndices]:
    """Two 1×2 slices, N = 2 queries, K = 2 classes; slice 0 has two segments, slice 1 one (3 in all)."""
    targets = SliceTargets(
        class_ids=torch.tensor([[0, 1], [1, 2]]),
        masks=torch.tensor([[[[1, 0]], [[0, 1]]], [[[1, 1]], [[0, 0]]]], dtype=torch.bool),
        boxes=torch.tensor([[[0, 0, 0.5, 1], [0.5, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 0, 0]]]),
        valid=torch.tensor([[True, True], [True, False]]),
    )
    outputs = MaskSamOutput(
        class_logits=torch.tensor([[[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]], [[0.3, 0.2, 0.1], [-1.0, 1.0, 0.0]]]),
        mask_logits=torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]], [[[50.0, -70.0]], [[1.0, -2.0]]]]),
        aux_mask_logits=torch.tensor([[[[-1.0, 0.0]], [[3.0, 3.0]]], [[[-40.0, 90.0]], [[0.5, 0.5]]]]),
        aux_boxes=torch.tensor([[[0, 0, 0.5, 1], [0.5, 0, 1, 0.5]], [[0.2, 0.2, 0.9, 0.9], [0, 0, 0.5, 0.5]]]),
        prompt_boxes=torch.zeros(2, 2, 4),
    )
    # Slice 0: query 0 -> segment 0, query 1 -> segment 1; slice 1: query 1 -> segment 0, query 0 unmatched.
    indices = MatchIndices(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    return outputs, targets, indices


def _tiny_batch_expected(weights: LossWeights) -> dict[str, float]:
    """Hand-computed terms of `_tiny_batch`, normalised by its 3 segments."""
    log_softmax = F.log_softmax(_tiny_batch()[0].class_logits, dim=-1)
    # (slice, query, target class, class weight); the unmatched query targets "no object" (class 2).
    queries = [(0, 0, 0, 1.0), (0, 1, 1, 1.0), (1, 0, 2, weights.no_object_weight), (1, 1, 1, 1.0)]
    cross_entropy = sum(-w * float(log_softmax[g, q, c]) for g, q, c, w in queries) / sum(w for *_, w in queries)
    pairs = [  # (final logits, auxiliary logits, target) of the matched masks
        ([2.0, -1.0], [-1.0, 0.0], [1.0, 0.0]),
        ([0.0, 1.0], [3.0, 3.0], [0.0, 1.0]),
        ([1.0, -2.0], [0.5, 0.5], [1.0, 1.0]),
    ]
    unweighted = {
        "classification": cross_entropy,
        "mask_bce": sum(_mean_bce(final, t) for final, _, t in pairs) / 3,
        "mask_dice": sum(_dice(final, t) for final, _, t in pairs) / 3,
        "aux_mask_bce": sum(_mean_bce(aux, t) for _, aux, t in pairs) / 3,
        "aux_mask_dice": sum(_dice(aux, t) for _, aux, t in pairs) / 3,
        # Boxes: exact (L1 0, GIoU 1); top half of the target (L1 0.5, GIoU 0.5); quarter (L1 1, GIoU 0.25).
        "box_l1": (0 + 0.5 + 1.0) / 3,
        "box_giou": ((1 - 1) + (1 - 0.5) + (1 - 0.25)) / 3,
    }
    expected = {name: getattr(weights, name) * value for name, value in unweighted.items()}
    return {**expected, "denoising_classification": 0.0, "denoising_mask_bce": 0.0, "denoising_mask_dice": 0.0}


def _perfect_batch(seed: int = 0) -> tuple[MaskSamOutput, SliceTargets]:
    """Predictions equal to the targets: ±100 logits, classes peaked at 100, exact boxes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (2, 3, 6, 7), generator=generator)
    labels[0, 1] = 0  # a slice with one segment only
    targets = build_targets(labels, num_classes=3, num_queries=4)
    logits = targets.masks.float() * 200 - 100  # padding queries predict empty masks
    outputs = MaskSamOutput(
        class_logits=F.one_hot(targets.class_ids, 4).float() * 100,  # padding queries predict "no object"
        mask_logits=logits,
        aux_mask_logits=logits.clone(),
        aux_boxes=targets.boxes.clone(),
        prompt_boxes=targets.boxes.clone(),
    )
    return outputs, targets


def _random_outputs(
    num_slices: int, num_queries: int, num_classes: int, size: tuple[int, int], seed: int, requires_grad: bool = False
) -> MaskSamOutput:
    generator = torch.Generator().manual_seed(seed)
    tensors = [
        torch.randn(num_slices, num_queries, num_classes + 1, generator=generator),
        torch.randn(num_slices, num_queries, *size, generator=generator) * 2,
        torch.randn(num_slices, num_queries, *size, generator=generator) * 2,
        centred_box(torch.randn(num_slices, num_queries, 4, generator=generator)),
        torch.zeros(num_slices, num_queries, 4),
    ]
    return MaskSamOutput(*(t.requires_grad_(requires_grad) for t in tensors))


def test_tiny_batch_equals_hand_normalised_values() -> None:
    outputs, targets, indices = _tiny_batch()
    weights = LossWeights()
    losses = SetCriterion(num_classes=2, weights=weights, sampling=EVERY_PIXEL)(outputs, targets, indices=indices)
    expected = _tiny_batch_expected(weights)
    for name in TERMS:
        assert getattr(losses, name).item() == pytest.approx(expected[name], rel=1e-5), name
    assert losses.total.item() == pytest.approx(sum(expected.values()), rel=1e-5)
    assert losses.as_floats() == pytest.approx({**expected, "total": sum(expected.values())}, rel=1e-5)


def test_design_weights_are_the_matching_costs() -> None:
    weights = LossWeights()
    assert weights.matching_costs() == MatchCosts()
    assert (weights.classification, weights.mask_bce, weights.mask_dice) == (0.2, 1.5, 1.5)
    assert (weights.aux_mask_bce, weights.aux_mask_dice, weights.box_l1, weights.box_giou) == (0.5, 0.5, 0.5, 0.2)
    assert weights.no_object_weight == 0.1


def test_other_weights_scale_each_term() -> None:
    outputs, targets, indices = _tiny_batch()
    weights = LossWeights(classification=2, mask_bce=0, mask_dice=3, aux_mask_bce=1, box_giou=4, no_object_weight=1)
    losses = SetCriterion(num_classes=2, weights=weights, sampling=EVERY_PIXEL)(outputs, targets, indices=indices)
    expected = _tiny_batch_expected(weights)
    assert losses.as_floats() == pytest.approx({**expected, "total": sum(expected.values())}, rel=1e-5)


def test_slices_without_segments_do_not_change_the_normaliser() -> None:
    outputs, targets, indices = _tiny_batch()
    criterion = SetCriterion(num_classes=2, sampling=EVERY_PIXEL)
    reference = criterion(outputs, targets, indices=indices)
    # Append a third slice without segments: mask and box terms keep their value (3 segments in both).
    widened_outputs = MaskSamOutput(*(None if t is None else torch.cat([t, t[:1]]) for t in vars(outputs).values()))
    empty = SliceTargets(
        class_ids=torch.cat([targets.class_ids, torch.full((1, 2), 2)]),
        masks=torch.cat([targets.masks, torch.zeros(1, 2, 1, 2, dtype=torch.bool)]),
        boxes=torch.cat([targets.boxes, torch.zeros(1, 2, 4)]),
        valid=torch.cat([targets.valid, torch.zeros(1, 2, dtype=torch.bool)]),
    )
    widened = criterion(widened_outputs, empty, indices=indices)
    for name in TERMS[1:]:
        assert getattr(widened, name).item() == pytest.approx(getattr(reference, name).item(), rel=1e-6), name


def test_matcher_inside_the_criterion_finds_the_obvious_matching() -> None:
    outputs, targets = _perfect_batch()
    criterion = SetCriterion(num_classes=3, sampling=EVERY_PIXEL)
    indices = criterion.matcher(outputs, targets)
    assert torch.equal(indices.prediction_index, indices.target_index)
    assert len(indices) == int(targets.valid.sum())


def test_perfect_prediction_has_near_zero_loss() -> None:
    outputs, targets = _perfect_batch()
    losses = SetCriterion(num_classes=3, sampling=EVERY_PIXEL)(outputs, targets)
    # Cross-entropy is ~0 too: padding queries are confidently "no object"; its 0.1 weight only rescales.
    for name, value in losses.as_floats().items():
        assert abs(value) < 1e-5, (name, value)


def test_loss_decreases_with_gradient_steps_on_sampled_points() -> None:
    torch.manual_seed(0)
    labels = torch.zeros(1, 2, 16, 16, dtype=torch.long)
    labels[0, 0, 3:9, 4:12] = 1
    labels[0, 1, 8:15, 2:7] = 2
    labels[0, 1, 1:4, 10:14] = 1
    targets = build_targets(labels, num_classes=3, num_queries=4)
    free = _random_outputs(2, 4, 3, (16, 16), seed=1, requires_grad=False)
    raw_boxes = torch.randn(2, 4, 4, requires_grad=True)
    parameters = [free.class_logits, free.mask_logits, free.aux_mask_logits, raw_boxes]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=0.3)
    criterion = SetCriterion(num_classes=3, sampling=PointSamplingConfig(num_points=64))  # 64 of 256 pixels
    history = []
    for _ in range(40):
        outputs = MaskSamOutput(free.class_logits, free.mask_logits, free.aux_mask_logits, centred_box(raw_boxes), None)
        losses = criterion(outputs, targets)
        optimizer.zero_grad()
        losses.total.backward()
        assert all(torch.isfinite(p.grad).all() for p in parameters)
        optimizer.step()
        history.append(losses.as_floats())
    assert history[-1]["total"] < 0.3 * history[0]["total"]
    for name in TERMS:
        if name.startswith("denoising"):
            assert history[-1][name] == history[0][name] == 0.0, name  # no denoising queries decoded
        else:
            assert history[-1][name] < history[0][name], name


def _edge_case(case: str) -> tuple[MaskSamOutput, SliceTargets]:
    labels = torch.randint(0, 3, (2, 2, 12, 10), generator=torch.Generator().manual_seed(4))
    targets = build_targets(labels, num_classes=3, num_queries=5, include_background=False)
    outputs = _random_outputs(4, 5, 3, (12, 10), seed=2)
    if case in ("slice-without-segments", "no-segments-at-all"):
        kept_slices = [] if case == "no-segments-at-all" else [0, 2]
        keep = torch.zeros(4, 1, dtype=torch.bool)
        keep[kept_slices] = True
        targets = SliceTargets(
            class_ids=torch.where(keep, targets.class_ids, 3),
            masks=targets.masks & keep[..., None, None],
            boxes=targets.boxes * keep[..., None],
            valid=targets.valid & keep,
        )
    elif case == "empty-auxiliary-masks":
        outputs.aux_mask_logits.fill_(-80.0)
    elif case == "zero-size-boxes":
        outputs.aux_boxes.zero_()
    elif case == "huge-logits":
        outputs.mask_logits.mul_(1e4)
        outputs.class_logits.mul_(1e4)
    return outputs, targets


@pytest.mark.parametrize(
    "case", ["slice-without-segments", "no-segments-at-all", "empty-auxiliary-masks", "zero-size-boxes", "huge-logits"]
)
@pytest.mark.parametrize(
    "sampling", [pytest.param(EVERY_PIXEL, id="every-pixel"), pytest.param(PointSamplingConfig(32), id="32-points")]
)
def test_loss_and_gradients_are_finite(case: str, sampling: PointSamplingConfig) -> None:
    outputs, targets = _edge_case(case)
    for tensor in vars(outputs).values():
        if tensor is not None:
            tensor.requires_grad_(True)
    losses = SetCriterion(num_classes=3, sampling=sampling)(outputs, targets)
    assert all(math.isfinite(value) for value in losses.as_floats().values())
    losses.total.backward()
    for name in ("class_logits", "mask_logits", "aux_mask_logits", "aux_boxes"):
        gradient = getattr(outputs, name).grad
        assert gradient is not None and torch.isfinite(gradient).all(), name  # connected even without matches
    if case == "no-segments-at-all":
        assert losses.as_floats() == pytest.approx({name: 0.0 for name in TERMS[1:]} | {
            "classification": losses.classification.item(), "total": losses.classification.item()
        })  # fmt: skip


def test_bfloat16_outputs_are_computed_in_float32() -> None:
    labels = torch.randint(0, 3, (1, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    targets = build_targets(labels, num_classes=3, num_queries=4)
    halves = MaskSamOutput(
        *(None if t is None else t.bfloat16() for t in vars(_random_outputs(3, 4, 3, (8, 8), seed=3)).values())
    )
    widened = MaskSamOutput(*(None if t is None else t.float() for t in vars(halves).values()))
    criterion = SetCriterion(num_classes=3, sampling=EVERY_PIXEL)
    reference = criterion(widened, targets).as_dict()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for outputs in (halves, widened):
            losses = criterion(outputs, targets)
            assert all(value.dtype == torch.float32 for value in losses.as_dict().values())
            for name, value in losses.as_dict().items():
                torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6)


def test_loss_terms_as_dict_and_floats() -> None:
    values = {name: torch.tensor(float(i), requires_grad=True) for i, name in enumerate([*TERMS, "total"])}
    terms = LossTerms(**values)
    assert list(terms.as_dict()) == [*TERMS, "total"]
    assert not any(t.requires_grad for t in terms.as_dict().values())
    assert terms.as_floats() == {name: float(i) for i, name in enumerate([*TERMS, "total"])}


def test_wrong_number_of_classes_is_refused() -> None:
    outputs, targets, indices = _tiny_batch()
    with pytest.raises(ValueError, match="expected K\\+1 = 4"):
        SetCriterion(num_classes=3)(outputs, targets, indices=indices)


def test_number_of_segments_is_at_least_one() -> None:
    assert number_of_segments(torch.zeros(3, 4, dtype=torch.bool)).item() == 1.0
    assert number_of_segments(torch.tensor([[True, True], [True, False]])).item() == 3.0


@pytest.mark.parametrize(
    ("height", "width", "num_points", "every_pixel"),
    [
        pytest.param(8, 8, 64, True, id="as-many-points-as-pixels"),
        pytest.param(8, 8, 100, True, id="more-points-than-pixels"),
        pytest.param(8, 8, 63, False, id="fewer-points"),
    ],
)
def test_uncertain_points_shape_and_every_pixel_cap(height: int, width: int, num_points: int, every_pixel: bool):
    points = uncertain_points(torch.randn(5, height, width), PointSamplingConfig(num_points=num_points))
    if every_pixel:
        assert points is None
    else:
        assert points.shape == (5, num_points, 2)
        assert (points >= 0).all() and (points <= 1).all()


def test_uncertain_points_favour_logits_near_zero() -> None:
    # |logit| grows with x, so uncertainty ranks points by x: the 300 importance points of 400 are the
    # smallest x among 800 uniform candidates (x < ~0.375), the other 100 are uniform.
    columns = (torch.arange(32) + 0.5) / 32
    logits = (40 * columns).expand(3, 32, 32)  # (M, H, W), value depends on the column only
    config = PointSamplingConfig(num_points=400, oversample_ratio=2.0, importance_sample_ratio=0.75)
    points = uncertain_points(logits, config, generator=torch.Generator().manual_seed(0))
    share = (points[..., 0] < 0.375).float().mean(dim=1)  # expected 0.75 + 0.25 * 0.375 = 0.84
    assert ((share - 0.84).abs() < 0.06).all(), share
    uniform = uncertain_points(logits, PointSamplingConfig(400, importance_sample_ratio=0.0))
    assert ((uniform[..., 0] < 0.375).float().mean() - 0.375).abs() < 0.06


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"num_points": 0}, id="no-points"),
        pytest.param({"oversample_ratio": 0.5}, id="undersampling"),
        pytest.param({"importance_sample_ratio": 1.5}, id="importance-above-one"),
    ],
)
def test_sampling_config_is_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PointSamplingConfig(**kwargs)


_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    from test_criterion import _tiny_batch, EVERY_PIXEL
    from masksam.training.criterion import SetCriterion

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    outputs, targets, indices = _tiny_batch()
    if rank == 1:  # rank 1 keeps one segment: 3 + 1 segments over 2 ranks -> normaliser 2 on both
        targets.valid[0] = False
        keep = indices.slice_index == 1
        indices = type(indices)(indices.slice_index[keep], indices.prediction_index[keep], indices.target_index[keep])
    criterion = SetCriterion(num_classes=2, sampling=EVERY_PIXEL)
    synchronised = criterion(outputs, targets, indices=indices).as_floats()
    local = criterion(outputs, targets, indices=indices, synchronise=False).as_floats()
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as file:
        json.dump({"synchronised": synchronised, "local": local}, file)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_segment_count_is_averaged_over_ranks(tmp_path) -> None:
    script = tmp_path / "ddp_loss.py"
    script.write_text(_DDP_SCRIPT)
    tests_dir = str(Path(__file__).parent)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(tmp_path), tests_dir,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank, local_count in ((0, 3), (1, 1)):
        losses = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in TERMS[1:]:  # mask and box terms: local sum / 2 instead of local sum / local count
            expected = losses["local"][name] * local_count / 2
            assert losses["synchronised"][name] == pytest.approx(expected, rel=1e-6, abs=1e-9), (rank, name)
        assert losses["synchronised"]["classification"] == pytest.approx(losses["local"]["classification"])
