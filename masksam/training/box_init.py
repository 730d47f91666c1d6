"""Where class-slot queries' learned boxes start: each class's typical box in training patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from masksam.data.cache import CaseCache
from masksam.data.sampling import sample_patch
from masksam.data.targets import build_class_slot_targets
from masksam.model.prompt_generator import spread_boxes

# Training patches drawn to estimate the boxes (as the loader draws them: a third centred on foreground).
PATCHES_FOR_BOXES = 48


def typical_class_boxes(
    cache_folder: Path,
    case_ids: list[str],
    *,
    patch_size: tuple[int, int, int],
    num_classes: int,
    include_background: bool,
    seed: int,
    count: int = PATCHES_FOR_BOXES,
) -> torch.Tensor:
    """(C, 4) normalised xyxy: per class slot, the median of its boxes over the slices of ``count`` patches.

    Patches are drawn from the cached training cases as the loader draws them (every third one at random, the
    others centred on a foreground class), so the boxes are in patch coordinates. A class never seen keeps a
    box spread over the image.
    """
    slots = num_classes - (0 if include_background else 1)
    fallback = spread_boxes(slots)
    if not case_ids:
        return fallback
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    cache = CaseCache(cache_folder)
    labels = []
    for index in range(count):
        case = cache.read(case_ids[int(rng.integers(len(case_ids)))], mmap=True)
        patch = sample_patch(case.image, case.label, case.foreground, patch_size, rng, force_foreground=index % 3 != 0)
        labels.append(torch.from_numpy(patch.label.astype(np.int64)))
    targets = build_class_slot_targets(
        torch.stack(labels), num_classes=num_classes, include_background=include_background
    )  # (count*T, C, ...)
    boxes = fallback.clone()
    for slot in range(slots):
        seen = targets.boxes[targets.valid[:, slot], slot]  # (n, 4)
        if len(seen):
            boxes[slot] = seen.median(dim=0).values
    return boxes
