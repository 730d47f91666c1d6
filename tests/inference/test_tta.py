"""Mirroring TTA: every flip combination once, scores mirrored back, exact average."""

from __future__ import annotations

import pytest
import torch

from masksam.inference.sliding_window import SlidingWindowConfig, sliding_window_scores
from masksam.inference.tta import mirror_axes, mirror_combinations, with_mirroring


@pytest.mark.parametrize(
    ("mirror_depth", "expected"),
    [
        pytest.param(False, [(), (3,), (4,), (3, 4)], id="in-plane"),
        pytest.param(True, [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)], id="with-depth"),
    ],
)
def test_every_combination_once_identity_first(mirror_depth: bool, expected) -> None:
    assert mirror_combinations(mirror_axes(mirror_depth=mirror_depth)) == expected


def pointwise(patches: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) -> (B, 2, T, H, W), voxel by voxel: mirror-equivariant by construction."""
    return torch.cat([patches.sigmoid(), patches**2], dim=1)


def positional(patches: torch.Tensor) -> torch.Tensor:
    """The voxel value plus 100·t + 10·h + w: mirroring changes every score except the value's."""
    _, _, slices, height, width = patches.shape
    t = torch.arange(slices).view(slices, 1, 1)
    h = torch.arange(height).view(1, height, 1)
    w = torch.arange(width).view(1, 1, width)
    return patches + (100 * t + 10 * h + w).float()


@pytest.mark.parametrize("mirror_depth", [False, True], ids=["in-plane", "with-depth"])
def test_equivariant_model_is_unchanged(mirror_depth: bool) -> None:
    patches = torch.randn(3, 1, 2, 5, 6)
    mirrored = with_mirroring(pointwise, mirror_axes(mirror_depth=mirror_depth))
    torch.testing.assert_close(mirrored(patches), pointwise(patches), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("mirror_depth", "offset"),
    [
        # Mean over flips of h and (H-1-h) is (H-1)/2; likewise for w (and t with depth mirroring).
        pytest.param(False, lambda t, T, H, W: 100 * t + 10 * (H - 1) / 2 + (W - 1) / 2, id="in-plane"),
        pytest.param(True, lambda t, T, H, W: 100 * (T - 1) / 2 + 10 * (H - 1) / 2 + (W - 1) / 2, id="with-depth"),
    ],
)
def test_average_of_flipped_back_scores_is_exact(mirror_depth: bool, offset) -> None:
    patches = torch.randn(2, 1, 3, 5, 6)
    mirrored = with_mirroring(positional, mirror_axes(mirror_depth=mirror_depth))
    t = torch.arange(3).view(3, 1, 1).float()
    expected = patches + offset(t, 3, 5, 6)
    torch.testing.assert_close(mirrored(patches), expected, rtol=0, atol=1e-4)  # float32 at ~200


def test_no_axes_is_the_plain_function() -> None:
    assert with_mirroring(pointwise, ()) is pointwise


def test_sliding_window_with_tta_on_an_equivariant_model() -> None:
    volume = torch.randn(1, 5, 9, 11)
    config = SlidingWindowConfig(patch_size=(2, 4, 4), windows_per_batch=3)
    plain = sliding_window_scores(volume, pointwise, num_classes=2, config=config)
    augmented = sliding_window_scores(volume, with_mirroring(pointwise, (2, 3, 4)), num_classes=2, config=config)
    torch.testing.assert_close(augmented, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plain, pointwise(volume[None])[0], rtol=1e-6, atol=1e-6)
