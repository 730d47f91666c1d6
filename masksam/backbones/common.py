"""Small layers shared by SAM's image encoders, prompt encoder and mask decoder (official parameter names)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, as in SAM's neck and upscaling path.

    Computed as one fused `layer_norm` over the last axis of the (B, H, W, C) view (SAM's formula: biased
    variance, eps inside the square root) instead of eight element-wise passes; the output is channels-last
    in memory, which the convolutions that follow keep.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        channels_last = x.permute(0, 2, 3, 1)  # (B, H, W, C); free when x is channels-last in memory
        normed = F.layer_norm(channels_last, (x.shape[1],), self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (`lin1`, `lin2` as in SAM's checkpoints)."""

    def __init__(self, *, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of `module` and return it (used for all SAM weights)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device``, for float32 work inside a mixed-precision forward (nothing to switch
    off on the meta device, where shapes are checked)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def cpu_conv3d_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Float32 for 3-D convolutions inside a bf16 forward on the CPU; autocast unchanged on other devices.

    oneDNN's bf16 weight gradients of some 3-D convolutions (one input channel at 4×256×256; a 1×1×1 128->32
    conv at 4×64×64) ran for minutes, or crashed, on an AMX CPU with torch 2.13, where every 2-D kernel and
    matmul was several times faster in bf16. Our 3-D convolutions are a small share of a step.
    """
    if device.type != "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cpu", enabled=False)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (an additive ``attn_mask`` in any float dtype); on the CPU a bf16/fp16
    call that autograd will differentiate is computed in float32 and cast back.

    PyTorch's CPU flash kernel runs its backward 2-5x slower in bf16 than in float32 at our shapes (windows of 49
    and 196 tokens, the decoder's 8 tokens against 1024), while its bf16 forward is as fast as float32's and the
    linear layers around it gain several times from bf16 on AMX CPUs (benchmarks/bench_cpu_attention.py). So only
    attention under autograd leaves bf16; inference and the paused encoder keep the bf16 kernel.
    """
    additive = attn_mask is not None and attn_mask.is_floating_point()
    differentiated = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16) or not differentiated:
        mask = attn_mask.to(q.dtype) if additive else attn_mask  # the kernel takes an additive mask in q's dtype
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    mask = attn_mask.float() if additive else attn_mask
    with float32_region(q.device):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale)
    return out.to(q.dtype)
