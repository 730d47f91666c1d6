"""Tests of masksam.backbones.common: LayerNorm2d against SAM's explicit formula, in both memory layouts."""

from __future__ import annotations

import pytest
import torch

from masksam.backbones.common import LayerNorm2d


def explicit_layer_norm_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """SAM's definition: biased variance over the channel axis, eps inside the square root."""
    mean = x.mean(1, keepdim=True)
    variance = (x - mean).pow(2).mean(1, keepdim=True)
    return weight[:, None, None] * (x - mean) / torch.sqrt(variance + eps) + bias[:, None, None]


@pytest.mark.parametrize(
    "memory_format",
    [pytest.param(torch.contiguous_format, id="nchw"), pytest.param(torch.channels_last, id="channels-last")],
)
def test_layer_norm_2d_equals_explicit_formula(memory_format):
    generator = torch.Generator().manual_seed(0)
    norm = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=generator))
        norm.bias.copy_(torch.randn(6, generator=generator))
    x = (torch.randn(2, 6, 5, 7, generator=generator) * 3 + 1).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    out = norm(x)
    expected = explicit_layer_norm_2d(x, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)
