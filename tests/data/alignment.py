"""Checks that an augmented image and its label stay aligned to the voxel: an image whose channels are each voxel's
own coordinates tells, after any rotation, scaling, mirroring or crop, where every output voxel came from."""

from __future__ import annotations

import torch


def coordinate_image(size: tuple[int, int, int]) -> torch.Tensor:
    """(4, T, H, W) float32: each voxel's own (t, y, x) coordinates, and ones.

    Bilinear interpolation reproduces a linear function exactly, so after any rotation, scaling or mirroring each
    output voxel's first three channels name the input position its image value came from; the ones channel stays 1
    only where no padding was blended in.
    """
    t, y, x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij")
    return torch.stack([t, y, x, torch.ones(size)])


def assert_label_follows_image(image: torch.Tensor, label: torch.Tensor, source_label: torch.Tensor) -> None:
    """Every output label is the source label at the voxel nearest to where its image value came from.

    Args:
        image: (4, T, H, W) augmented :func:`coordinate_image` (values of padding blended in are left out).
        label: (T, H, W) augmented label.
        source_label: (T0, H0, W0) label the coordinates refer to.
    """
    position = image[:3]  # (3, T, H, W) input coordinates
    inside = (image[3] - 1).abs() < 1e-4  # (T, H, W) no padding blended in
    limits = torch.tensor(source_label.shape, dtype=torch.float32).view(3, 1, 1, 1) - 1
    assert ((position >= -1e-4) & (position <= limits + 1e-4)).all(dim=0)[inside].all()
    # In-plane positions within 0.01 of half-way between two voxels may round either way (a tie for 'nearest').
    decided = inside & ((position[1:] - position[1:].floor() - 0.5).abs() > 0.01).all(dim=0)  # (T, H, W)
    assert decided.sum() > 0.9 * inside.sum() > 0  # the ties are few
    t, y, x = torch.minimum(position.round().clamp_min(0), limits).long()
    expected = source_label[t, y, x]  # (T, H, W)
    mismatched = (label != expected) & decided
    assert not mismatched.any(), f"{int(mismatched.sum())} of {int(decided.sum())} labels left their image voxel"
