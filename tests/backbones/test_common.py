"""Tests of masksam.backbones.common: LayerNorm2d against SAM's explicit formula, in both memory layouts; the
attention helper's float32 detour for bf16 autograd on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from masksam.backbones import common
from masksam.backbones.common import LayerNorm2d, attention


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


def attention_inputs(dtype: torch.dtype, *, grad: bool) -> tuple[torch.Tensor, ...]:
    """q (2, 3, 5, 4), k and v (2, 3, 6, 4), an additive (1, 3, 5, 6) bias, in ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator) for shape in ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 4)))
    bias = torch.randn(1, 3, 5, 6, generator=generator)
    return tuple(t.to(dtype).requires_grad_(grad and t is not bias) for t in (q, k, v, bias))


def kernel_dtypes(monkeypatch) -> list[torch.dtype]:
    """The dtype of q in each call of the attention kernel from now on."""
    seen = []
    kernel = F.scaled_dot_product_attention

    def recording(q, *args, **kwargs):
        seen.append(q.dtype)
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(common.F, "scaled_dot_product_attention", recording)
    return seen


def test_bf16_attention_under_autograd_runs_the_float32_kernel_on_the_cpu(monkeypatch):
    q, k, v, bias = attention_inputs(torch.bfloat16, grad=True)
    seen = kernel_dtypes(monkeypatch)
    out = attention(q, k, v, attn_mask=bias, scale=0.3)
    out.float().sum().backward()
    assert seen == [torch.float32] and out.dtype == torch.bfloat16
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.float(), scale=0.3)
    torch.testing.assert_close(out, expected.to(torch.bfloat16))


@pytest.mark.parametrize(
    ("dtype", "grad"),
    [
        pytest.param(torch.bfloat16, False, id="bf16-inference"),  # bf16's forward kernel is as fast
        pytest.param(torch.float32, True, id="float32-training"),
    ],
)
def test_other_attention_calls_run_the_kernel_as_given(monkeypatch, dtype: torch.dtype, grad: bool):
    q, k, v, bias = attention_inputs(dtype, grad=grad)
    seen = kernel_dtypes(monkeypatch)
    with torch.set_grad_enabled(grad):
        out = attention(q, k, v, attn_mask=bias)
    assert seen == [dtype] and out.dtype == dtype
