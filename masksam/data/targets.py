"""Dataset mapping (paper §2.2): label patches to per-slice sets of (class, mask, box) targets.

Box convention (pixel-edge, normalised, xyxy): for a segment whose pixels occupy columns ``c_min..c_max``
and rows ``r_min..r_max`` of an H×W slice::

    x1 = c_min / W,   y1 = r_min / H,   x2 = (c_max + 1) / W,   y2 = (r_max + 1) / H

so a full-slice segment has box (0, 0, 1, 1), a single pixel at (r, c) has width 1/W and height 1/H, and
x2 > x1, y2 > y1 for every real segment. Padding queries have box (0, 0, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SliceTargets:
    """Targets of B*T slices, padded to N queries each.

    Attributes:
        class_ids: (B*T, N) long; class id of each segment, K ("no object") for padding.
        masks: (B*T, N, H, W) bool; the segment's pixels (all False for padding).
        boxes: (B*T, N, 4) float32; normalised xyxy boxes (see module docstring), zeros for padding.
        valid: (B*T, N) bool; True for real segments.
    """

    class_ids: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device | str) -> SliceTargets:
        """Moves every tensor to ``device``."""
        return SliceTargets(*(t.to(device) for t in (self.class_ids, self.masks, self.boxes, self.valid)))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Normalised xyxy boxes of binary masks (module convention); empty masks give zeros.

    Args:
        masks: (..., H, W) bool.

    Returns:
        (..., 4) float32.
    """
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    # First / last True index via argmax on the flags and on their reversal.
    r_min = rows.float().argmax(dim=-1)
    r_max = h - 1 - rows.flip(-1).float().argmax(dim=-1)
    c_min = cols.float().argmax(dim=-1)
    c_max = w - 1 - cols.flip(-1).float().argmax(dim=-1)
    boxes = torch.stack([c_min / w, r_min / h, (c_max + 1) / w, (r_max + 1) / h], dim=-1).float()
    return boxes * rows.any(dim=-1, keepdim=True)  # zero for empty masks


def build_class_slot_targets(
    labels: torch.Tensor, *, num_classes: int, include_background: bool = True
) -> SliceTargets:
    """Per-slice targets with one slot per class: slot k holds class k (k + 1 without background).

    A class absent from a slice leaves its slot empty (``valid`` False, "no object", zero mask and box), so
    slot k always answers for the same class: the layout of class-slot queries and of denoising queries.

    Args:
        labels: (B, T, H, W) integer label patch with values in 0..K-1.
        num_classes: K, classes including background; also the "no object" class index.
        include_background: Background (class 0) has a slot.

    Returns:
        The targets of the B*T slices, K (or K - 1) slots each.

    Raises:
        ValueError: A CPU label is outside 0..K-1 (labels on a GPU are not read back).
    """
    b, t, h, w = labels.shape
    flat = _checked_slices(labels, num_classes)  # (S, H, W)
    first = 0 if include_background else 1
    class_ids = torch.arange(first, num_classes, device=labels.device)  # (slots,)
    masks = flat[:, None] == class_ids[None, :, None, None]  # (S, slots, H, W)
    valid = masks.flatten(2).any(dim=-1)  # (S, slots)
    ids = torch.where(valid, class_ids, torch.full_like(class_ids, num_classes))  # (S, slots)
    return SliceTargets(class_ids=ids, masks=masks, boxes=masks_to_boxes(masks), valid=valid)


def check_class_ids(labels: torch.Tensor, num_classes: int) -> None:
    """Checks that CPU labels lie in 0..K-1; labels on a GPU are not read (that would wait for the GPU every
    step): check them on the CPU before the copy, as the trainer does.

    Raises:
        ValueError: A CPU label is outside 0..K-1.
    """
    if labels.device.type != "cpu" or not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"label values must lie in 0..{num_classes - 1}, got {low}..{high}")


def _checked_slices(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, T, H, W) labels -> (B*T, H, W) long, checked to lie in 0..K-1 when on the CPU (`check_class_ids`)."""
    b, t, h, w = labels.shape
    check_class_ids(labels, num_classes)
    return labels.reshape(b * t, h, w).long()  # (S, H, W), S = B*T slices


def build_targets(
    labels: torch.Tensor, *, num_classes: int, num_queries: int, include_background: bool = True
) -> SliceTargets:
    """Turns label patches into per-slice segment sets, padded to N queries.

    Segments of a slice are its present classes in increasing class id, one per class (semantic
    segmentation: all pixels of a class form one segment).

    Args:
        labels: (B, T, H, W) integer label patch with values in 0..K-1.
        num_classes: K, classes including background; also the "no object" class index.
        num_queries: N, queries per slice.
        include_background: Background (class 0) is a segment of every slice that has any.

    Returns:
        The targets of the B*T slices.

    Raises:
        ValueError: A slice has more segments than N (checked only when N < K: with N >= K it cannot happen, and
            the check reads the counts back from a GPU), or a CPU label is outside 0..K-1.
    """
    b, t, h, w = labels.shape
    flat = _checked_slices(labels, num_classes)  # (S, H, W)
    one_hot = F.one_hot(flat, num_classes).permute(0, 3, 1, 2).bool()  # (S, K, H, W)
    present = one_hot.flatten(2).any(dim=-1)  # (S, K)
    if not include_background:
        present[:, 0] = False
    counts = present.sum(dim=1)  # (S,)
    if num_queries < num_classes and counts.numel() and int(counts.max()) > num_queries:
        raise ValueError(
            f"a slice has {int(counts.max())} segments but there are only {num_queries} queries; raise num_queries"
        )
    # Present classes first, in class order: sort key = class id, pushed past K for absent classes.
    class_range = torch.arange(num_classes, device=labels.device).expand(b * t, num_classes)  # (S, K)
    order = torch.argsort(class_range + (~present) * num_classes, dim=1)  # (S, K)
    slots = min(num_queries, num_classes)
    order = order[:, :slots]  # (S, slots)
    valid = torch.gather(present, 1, order)  # (S, slots)
    masks = torch.gather(one_hot, 1, order[:, :, None, None].expand(-1, -1, h, w))  # (S, slots, H, W)
    masks = masks & valid[:, :, None, None]
    class_ids = torch.where(valid, order, torch.full_like(order, num_classes))  # (S, slots)
    boxes = masks_to_boxes(masks)  # (S, slots, 4)
    pad = num_queries - slots
    if pad:
        class_ids = F.pad(class_ids, (0, pad), value=num_classes)  # (S, N)
        valid = F.pad(valid, (0, pad), value=False)
        masks = F.pad(masks, (0, 0, 0, 0, 0, pad), value=False)  # (S, N, H, W)
        boxes = F.pad(boxes, (0, 0, 0, pad), value=0.0)  # (S, N, 4)
    return SliceTargets(class_ids=class_ids, masks=masks, boxes=boxes, valid=valid)
