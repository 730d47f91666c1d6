"""Per-epoch validation on a fixed set of patches: pseudo-Dice per class (nnU-Net's online estimate).

The patches are drawn once, with a fixed seed, from the fold's validation cases (two thirds centred on
foreground), so the curve in progress.png compares epochs on the same data. The full sliding-window
validation of whole cases runs once, after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masksam.data.cache import CaseCache
from masksam.data.sampling import sample_patch


@dataclass
class ValidationPatches:
    """images (V, C, T, H, W) float32 and labels (V, T, H, W) long, kept on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def shard(self, rank: int, world_size: int) -> ValidationPatches:
        """Every ``world_size``-th patch starting at ``rank`` (DDP ranks validate disjoint shares)."""
        return ValidationPatches(self.images[rank::world_size], self.labels[rank::world_size])

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


def draw_validation_patches(
    cache_folder: Path, case_ids: list[str], *, count: int, patch_size: tuple[int, int, int], seed: int
) -> ValidationPatches | None:
    """``count`` patches cycling over ``case_ids`` (None when there are no validation cases or count is 0)."""
    if not case_ids or count <= 0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    cache = CaseCache(cache_folder)
    images, labels = [], []
    for index in range(count):
        case = cache.read(case_ids[index % len(case_ids)], mmap=True)
        patch = sample_patch(case.image, case.label, case.foreground, patch_size, rng, force_foreground=index % 3 != 0)
        images.append(torch.from_numpy(np.ascontiguousarray(patch.image, dtype=np.float32)))
        labels.append(torch.from_numpy(patch.label.astype(np.int64)))
    return ValidationPatches(torch.stack(images), torch.stack(labels))


def confusion_counts(predicted: torch.Tensor, reference: torch.Tensor, num_classes: int) -> torch.Tensor:
    """True positives, false positives and false negatives per class.

    Args:
        predicted: Integer class map of any shape.
        reference: Integer class map of the same shape.
        num_classes: K.

    Returns:
        (K, 3) int64: TP, FP, FN of every class.
    """
    pairs = reference.reshape(-1).long() * num_classes + predicted.reshape(-1).long()
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    true_positive = confusion.diagonal()
    false_positive = confusion.sum(dim=0) - true_positive  # predicted as the class, labelled otherwise
    false_negative = confusion.sum(dim=1) - true_positive
    return torch.stack([true_positive, false_positive, false_negative], dim=1)


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """(K, 3) TP/FP/FN -> (K,) Dice, NaN for a class neither predicted nor present."""
    counts = counts.double()
    true_positive, false_positive, false_negative = counts.unbind(dim=1)
    denominator = 2 * true_positive + false_positive + false_negative
    return torch.where(denominator > 0, 2 * true_positive / denominator.clamp(min=1), torch.nan)
