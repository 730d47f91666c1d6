"""Adapters and depth helpers: identity at initialisation, shape preservation, which slices they mix."""

from __future__ import annotations

import pytest
import torch

from masksam.model.adapters import Adapter, build_adapter
from masksam.model.depth import DepthPositionalEmbedding, fold_depth, unfold_depth


def open_weights(adapter: Adapter) -> None:
    """Random values for the zero-initialised tensors, as after some training."""
    with torch.no_grad():
        for parameter in adapter.parameters():
            if not parameter.any():
                parameter.normal_()


KINDS = ["vanilla", "depth_mlp", "depth_mlp_after_up", "depth_mlp_before_down", "depth_conv"]


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_adapter_is_identity_in_series_and_zero_in_parallel(kind: str) -> None:
    tokens = torch.randn(2 * 3, 4, 5, 16)  # (G*T, h, w, C)
    series = build_adapter(kind, dim=16, bottleneck=4, num_slices=3, depth_mlp_ratio=4)
    parallel = build_adapter(kind, dim=16, bottleneck=4, num_slices=3, depth_mlp_ratio=4, skip=False)
    torch.testing.assert_close(series(tokens, (4, 5)), tokens)
    torch.testing.assert_close(parallel(tokens, (4, 5)), torch.zeros_like(tokens))


@pytest.mark.parametrize(("kind", "mixes"), [("vanilla", False), ("depth_mlp", True), ("depth_conv", True)])
def test_only_depth_adapters_mix_slices(kind: str, mixes: bool) -> None:
    adapter = build_adapter(kind, dim=8, bottleneck=4, num_slices=3, depth_mlp_ratio=4)
    open_weights(adapter)
    tokens = torch.randn(3, 4 * 4, 8)  # one group of 3 slices, (T, h*w, C)
    changed = tokens.clone()
    changed[0] += 1.0
    with torch.no_grad():
        moved = (adapter(changed, (4, 4)) - adapter(tokens, (4, 4))).abs().flatten(1).amax(1)
    assert moved[0] > 0
    assert bool(moved[1] > 1e-6) is mixes  # the neighbouring slice (a 3×3×3 conv reaches only neighbours)
    assert bool(moved[1:].max() > 1e-6) is mixes


def test_depth_conv_respects_group_boundaries() -> None:
    adapter = build_adapter("depth_conv", dim=8, bottleneck=4, num_slices=2, depth_mlp_ratio=4)
    open_weights(adapter)
    tokens = torch.randn(2 * 2, 9, 8)  # two groups of two slices
    changed = tokens.clone()
    changed[1] += 1.0  # last slice of group 0
    with torch.no_grad():
        moved = (adapter(changed, (3, 3)) - adapter(tokens, (3, 3))).abs().flatten(1).amax(1)
    assert moved[0] > 0 and moved[1] > 0
    assert moved[2] == 0 and moved[3] == 0


def test_fold_and_unfold_are_inverse() -> None:
    volume = torch.randn(2, 3, 4, 5, 6)
    slices = fold_depth(volume)
    assert slices.shape == (8, 3, 5, 6)
    torch.testing.assert_close(slices[1 * 4 + 2], volume[1, :, 2])
    torch.testing.assert_close(unfold_depth(slices, 4), volume)


@pytest.mark.parametrize("channels_last", [True, False])
def test_depth_embedding_adds_row_t_to_slice_t(channels_last: bool) -> None:
    embedding = DepthPositionalEmbedding(3, 4)
    with torch.no_grad():
        embedding.table.copy_(torch.arange(12.0).view(3, 4))
    shape = (2 * 3, 5, 4) if channels_last else (2 * 3, 4, 5)
    out = embedding(torch.zeros(shape), channels_last=channels_last)
    for index in range(6):
        row = torch.arange(4.0) + 4 * (index % 3)
        expected = row.expand(5, 4) if channels_last else row[:, None].expand(4, 5)
        torch.testing.assert_close(out[index], expected)


def test_the_depth_conv_runs_in_float32_under_cpu_bf16_autocast() -> None:
    """oneDNN's bf16 gradients of some 3-D convolutions hung on an AMX CPU; the mixer's conv stays float32 there."""
    from masksam.model.adapters import DepthConvMixer

    mixer = DepthConvMixer(dim=8, num_slices=2)
    conv_dtypes = []
    mixer.conv.register_forward_hook(lambda module, args, output: conv_dtypes.append(output.dtype))
    tokens = torch.randn(4, 9, 8, requires_grad=True)  # (G*T, h*w, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = mixer(tokens, (3, 3))
    mixed.sum().backward()
    assert conv_dtypes == [torch.float32] and mixer.conv.weight.grad is not None
