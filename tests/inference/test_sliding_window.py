"""Sliding window: window starts, padding, Gaussian weights, and the blend against a brute-force voxel loop."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from masksam.inference.sliding_window import (
    SlidingWindowConfig,
    gaussian_importance_map,
    pad_volume,
    padding_for,
    sliding_window_scores,
    stream_scores,
    window_starts,
)


@pytest.mark.parametrize(
    ("size", "patch", "step", "expected"),
    [
        pytest.param(4, 4, 0.5, [0], id="equal"),
        pytest.param(10, 4, 0.5, [0, 2, 4, 6], id="multiple-of-step"),
        pytest.param(11, 4, 0.5, [0, 2, 4, 5, 7], id="not-a-multiple"),  # spacing 7/4 = 1.75, rounded
        pytest.param(10, 4, 1.0, [0, 3, 6], id="step-1"),
        pytest.param(5, 4, 0.5, [0, 1], id="one-more-voxel"),
        pytest.param(300, 2, 0.5, list(range(299)), id="slices"),
        pytest.param(9, 1, 0.5, list(range(9)), id="single-slice-windows-never-repeat"),
    ],
)
def test_window_starts(size: int, patch: int, step: float, expected: list[int]) -> None:
    starts = window_starts(size, patch, step)
    assert starts == expected
    assert starts[0] == 0 and starts[-1] == size - patch
    assert max(np.diff(starts), default=0) <= math.ceil(step * patch)


def test_window_starts_refuse_an_axis_smaller_than_the_patch() -> None:
    with pytest.raises(ValueError, match="pad it first"):
        window_starts(3, 4, 0.5)


@pytest.mark.parametrize(
    ("shape", "patch", "expected"),
    [
        pytest.param((5, 9, 7), (2, 4, 4), [(0, 0), (0, 0), (0, 0)], id="larger"),
        pytest.param((1, 3, 7), (2, 6, 4), [(0, 1), (1, 2), (0, 0)], id="smaller-centred"),
    ],
)
def test_padding_is_centred_and_cropped_back(shape, patch, expected) -> None:
    assert padding_for(shape, patch) == expected
    volume = torch.arange(np.prod(shape), dtype=torch.float32).reshape(1, *shape)
    padded, crop = pad_volume(volume, patch)
    assert tuple(padded.shape[1:]) == tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    assert torch.equal(padded[(slice(None), *crop)], volume)
    assert padded.sum() == volume.sum()  # the darkest value, 0 here, elsewhere


def test_padding_takes_each_channels_darkest_value() -> None:
    """An image channel pads with its own minimum (as training patches do); a label channel travelling with it
    keeps 0 (background), never the image's value."""
    image = torch.randn(1, 1, 3, 3) - 5  # (C, T, H, W), all negative
    label = torch.randint(0, 3, (1, 1, 3, 3)).float()
    label[0, 0, 0, 0] = 0
    padded, crop = pad_volume(torch.cat([image, label]), (1, 5, 5))
    outside = torch.ones(padded.shape[1:], dtype=torch.bool)
    outside[crop] = False
    assert torch.all(padded[0][outside] == image.min())
    assert torch.all(padded[1][outside] == 0)


@pytest.mark.parametrize("patch", [(2, 64, 64), (5, 7, 8), (1, 3, 2)], ids=["tiny-preset", "odd-even", "minimal"])
def test_gaussian_importance_map(patch) -> None:
    weights = gaussian_importance_map(patch)
    assert weights.shape == patch and weights.dtype == torch.float32
    assert weights.max() == pytest.approx(1.0, abs=1e-6) and weights.min() > 0
    for axis in range(3):
        torch.testing.assert_close(weights, weights.flip(axis))  # symmetric about the patch centre
    # Closed form: product of exp(-(i - c)² / 2σ²) with c = (n - 1) / 2, σ = n / 8, scaled to a maximum of 1.
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in patch], indexing="ij")
    closed = np.exp(-sum(g**2 / (2 * (n / 8) ** 2) for g, n in zip(grids, patch, strict=True)))
    np.testing.assert_allclose(weights.numpy(), closed / closed.max(), rtol=1e-5, atol=1e-7)


def window_dependent_scores(patches: torch.Tensor) -> torch.Tensor:
    """(B, 1, t, h, w) -> (B, 2, t, h, w): the voxel value plus its window's mean (differs between windows)."""
    mean = patches.mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
    return torch.cat([patches + mean, 2 * patches - mean * mean], dim=1)


def brute_force(volume: np.ndarray, patch: tuple[int, int, int], step: float) -> np.ndarray:
    """Weighted mean over windows, voxel by voxel, with padding (the volume's darkest value) written out by hand."""
    shape = volume.shape[1:]
    before = [max(0, p - s) // 2 for s, p in zip(shape, patch, strict=True)]
    padded = np.pad(
        volume,
        [(0, 0)] + [(b, max(0, p - s) - b) for b, s, p in zip(before, shape, patch, strict=True)],
        constant_values=volume.min(),
    ).astype(np.float64)
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in patch], indexing="ij")
    gauss = np.exp(-sum(g**2 / (2 * (n / 8) ** 2) for g, n in zip(grids, patch, strict=True)))
    gauss /= gauss.max()
    numerator = np.zeros((2, *padded.shape[1:]))
    denominator = np.zeros(padded.shape[1:])
    starts = [window_starts(n, p, step) for n, p in zip(padded.shape[1:], patch, strict=True)]
    for t0 in starts[0]:
        for h0 in starts[1]:
            for w0 in starts[2]:
                window = padded[0, t0 : t0 + patch[0], h0 : h0 + patch[1], w0 : w0 + patch[2]]
                mean = window.mean()
                for t in range(patch[0]):
                    for h in range(patch[1]):
                        for w in range(patch[2]):
                            value, g = window[t, h, w], gauss[t, h, w]
                            numerator[0, t0 + t, h0 + h, w0 + w] += g * (value + mean)
                            numerator[1, t0 + t, h0 + h, w0 + w] += g * (2 * value - mean * mean)
                            denominator[t0 + t, h0 + h, w0 + w] += g
    result = numerator / denominator
    return result[
        :, before[0] : before[0] + shape[0], before[1] : before[1] + shape[1], before[2] : before[2] + shape[2]
    ]


CASES = [
    pytest.param((1, 3, 2), (2, 4, 4), 0.5, 1, id="smaller-than-patch"),
    pytest.param((3, 3, 9), (2, 4, 4), 0.5, 2, id="smaller-in-plane-only"),
    pytest.param((5, 9, 7), (2, 4, 4), 0.5, 3, id="larger-not-a-multiple"),
    pytest.param((6, 8, 8), (2, 4, 4), 0.5, 4, id="larger-multiple"),
    pytest.param((7, 10, 9), (3, 4, 5), 0.3, 100, id="odd-patch-small-step"),
    pytest.param((5, 9, 7), (2, 4, 4), 1.0, 1, id="no-overlap-in-t"),
]


@pytest.mark.parametrize(("shape", "patch", "step", "windows_per_batch"), CASES)
def test_blend_equals_brute_force(shape, patch, step, windows_per_batch) -> None:
    volume = np.random.default_rng(sum(shape)).normal(size=(1, *shape)).astype(np.float32)
    config = SlidingWindowConfig(patch_size=patch, step=step, windows_per_batch=windows_per_batch)
    scores = sliding_window_scores(torch.from_numpy(volume), window_dependent_scores, num_classes=2, config=config)
    assert scores.shape == (2, *shape) and scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), brute_force(volume, patch, step), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("windows_per_batch", [1, 5, 1000], ids=["1", "5", "all"])
def test_stream_hands_out_every_slice_once_in_order(windows_per_batch: int) -> None:
    volume = torch.randn(1, 20, 9, 7)
    config = SlidingWindowConfig(patch_size=(2, 4, 4), windows_per_batch=windows_per_batch)
    slabs = list(stream_scores(volume, window_dependent_scores, num_classes=2, config=config))
    assert [s.start for s in slabs] == [0, *[s.stop for s in slabs[:-1]]] and slabs[-1].stop == 20
    if windows_per_batch == 1:
        assert len(slabs) == 19  # one finished slice per window row (starts 0..18), the last row finishes two
    one_by_one = dataclasses.replace(config, windows_per_batch=1)  # batching must not change the result
    full = sliding_window_scores(volume, window_dependent_scores, num_classes=2, config=one_by_one)
    torch.testing.assert_close(torch.cat([s.scores for s in slabs], dim=1), full)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"step": 0.0}, "step", id="step-0"),
        pytest.param({"step": 1.5}, "step", id="step-above-1"),
        pytest.param({"windows_per_batch": 0}, "windows_per_batch", id="no-windows"),
    ],
)
def test_config_rejects_bad_values(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        SlidingWindowConfig(patch_size=(2, 4, 4), **changes)
