"""Dataset mapping: label patches -> per-slice (class, mask, box) sets, checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from masksam.data.targets import build_class_slot_targets, build_targets, check_class_ids, masks_to_boxes


def _known_patch() -> torch.Tensor:
    # B=1, T=2, H=4, W=5.
    slice0 = torch.tensor(
        [
            [0, 0, 0, 0, 0],
            [0, 2, 2, 0, 0],
            [0, 2, 2, 0, 1],
            [0, 0, 0, 0, 1],
        ]
    )
    slice1 = torch.full((4, 5), 2)  # one class covering the whole slice, no background
    return torch.stack([slice0, slice1])[None]


def test_known_patch_include_background():
    targets = build_targets(_known_patch(), num_classes=3, num_queries=4)
    assert targets.class_ids.tolist() == [[0, 1, 2, 3], [2, 3, 3, 3]]
    assert targets.valid.tolist() == [[True, True, True, False], [True, False, False, False]]
    labels = _known_patch()[0]
    for query, cls in enumerate([0, 1, 2]):
        assert torch.equal(targets.masks[0, query], labels[0] == cls)
    assert torch.equal(targets.masks[1, 0], torch.ones(4, 5, dtype=torch.bool))
    assert not targets.masks[0, 3].any() and not targets.masks[1, 1:].any()
    expected = torch.tensor(
        [
            [[0 / 5, 0 / 4, 5 / 5, 4 / 4], [4 / 5, 2 / 4, 5 / 5, 4 / 4], [1 / 5, 1 / 4, 3 / 5, 3 / 4], [0, 0, 0, 0]],
            [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        ]
    )
    torch.testing.assert_close(targets.boxes, expected)
    assert targets.class_ids.dtype == torch.long and targets.masks.dtype == torch.bool
    assert targets.boxes.dtype == torch.float32 and targets.valid.dtype == torch.bool


def test_exclude_background():
    targets = build_targets(_known_patch(), num_classes=3, num_queries=2, include_background=False)
    assert targets.class_ids.tolist() == [[1, 2], [2, 3]]
    assert targets.valid.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize(("b", "t", "n"), [(2, 3, 8), (1, 1, 4), (3, 2, 3)])
def test_shapes_and_batch_order(b, t, n):
    labels = torch.randint(0, 3, (b, t, 16, 12))
    targets = build_targets(labels, num_classes=3, num_queries=n)
    assert targets.class_ids.shape == (b * t, n)
    assert targets.masks.shape == (b * t, n, 16, 12)
    assert targets.boxes.shape == (b * t, n, 4)
    # Slice s = b_index * T + t_index: its masks partition that slice.
    flat = labels.reshape(b * t, 16, 12)
    union = (targets.masks * targets.valid[:, :, None, None]).sum(dim=1)
    assert torch.equal(union, torch.ones_like(flat))
    recon = (targets.masks * targets.class_ids.clamp(max=2)[:, :, None, None]).sum(dim=1)
    assert torch.equal(recon, flat)


def test_too_many_segments_raises():
    with pytest.raises(ValueError, match="queries"):
        build_targets(torch.arange(4).view(1, 1, 2, 2), num_classes=4, num_queries=3)


def test_out_of_range_label_raises():
    with pytest.raises(ValueError, match="0..2"):
        build_targets(torch.full((1, 1, 2, 2), 5), num_classes=3, num_queries=4)


@pytest.mark.parametrize(
    ("pixels", "box"),
    [
        ([(0, 0)], [0, 0, 0.25, 0.5]),
        ([(1, 3)], [0.75, 0.5, 1.0, 1.0]),
        ([(0, 1), (1, 2)], [0.25, 0, 0.75, 1.0]),
        ([], [0, 0, 0, 0]),
    ],
    ids=["top-left-pixel", "bottom-right-pixel", "two-pixels", "empty"],
)
def test_masks_to_boxes_convention(pixels, box):
    mask = torch.zeros(2, 4, dtype=torch.bool)  # H=2, W=4
    for r, c in pixels:
        mask[r, c] = True
    torch.testing.assert_close(masks_to_boxes(mask), torch.tensor(box, dtype=torch.float32))


@pytest.mark.parametrize("include_background", [True, False], ids=["with-background", "foreground-only"])
def test_class_slot_targets_keep_each_class_in_its_slot(include_background: bool):
    labels = torch.zeros(1, 2, 6, 6, dtype=torch.long)
    labels[0, 0, 1:3, 1:4] = 2  # slice 0: class 2 only
    labels[0, 1, 0:2, 0:2] = 1  # slice 1: classes 1 and 2
    labels[0, 1, 4:6, 3:6] = 2
    targets = build_class_slot_targets(labels, num_classes=3, include_background=include_background)
    first = 0 if include_background else 1
    slots = 3 - first
    assert targets.class_ids.shape == targets.valid.shape == (2, slots)
    no_object = 3
    expected_ids = [[0, no_object, 2], [0, 1, 2]] if include_background else [[no_object, 2], [1, 2]]
    assert targets.class_ids.tolist() == expected_ids
    assert targets.valid.tolist() == [[i != no_object for i in row] for row in expected_ids]
    slot_of_two = 2 - first
    assert torch.equal(targets.masks[0, slot_of_two], labels[0, 0] == 2)
    torch.testing.assert_close(targets.boxes[0, slot_of_two], torch.tensor([1 / 6, 1 / 6, 4 / 6, 3 / 6]))
    absent = 1 - first  # class 1 in slice 0
    assert not targets.masks[0, absent].any() and not targets.boxes[0, absent].any()


def test_class_slot_targets_refuse_unknown_labels():
    with pytest.raises(ValueError, match="0..2"):
        build_class_slot_targets(torch.full((1, 1, 2, 2), 3), num_classes=3)


@pytest.mark.parametrize("slots", [False, True], ids=["segments", "class-slots"])
def test_labels_off_the_cpu_are_not_read_back(slots: bool):
    """Targets of GPU labels are built without a host sync (a range check or a count read back each step): the
    meta device, whose tensors have no values to read, stands in for the GPU. Training checks its CPU labels."""
    labels = torch.empty(2, 3, 8, 8, dtype=torch.long, device="meta")
    if slots:
        targets = build_class_slot_targets(labels, num_classes=4)
    else:
        targets = build_targets(labels, num_classes=4, num_queries=4)
    assert targets.masks.shape == (6, 4, 8, 8) and targets.boxes.device.type == "meta"


def test_cpu_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"label values must lie in 0\.\.2, got 0\.\.3"):
        check_class_ids(torch.tensor([[0, 3]], dtype=torch.uint8), 3)
    check_class_ids(torch.tensor([[0, 2]], dtype=torch.uint8), 3)
