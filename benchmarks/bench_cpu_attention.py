"""CPU attention at the shapes of a default LiteMedSAM training step: bf16 kernels against float32 ones.

Times ``F.scaled_dot_product_attention`` (forward alone, and forward + backward) for each attention shape the
default 128² LiteMedSAM step runs (TinyViT windows of 49 and 196 tokens with their bias, the mask decoder's
tokens against the image and back), four ways, side by side in this process:

- ``fp32``: float32 inputs, PyTorch's default kernel choice (flash on the CPU);
- ``bf16``: bf16 inputs, default kernel choice (what a bf16 autocast forward ran before);
- ``bf16 math``: bf16 inputs, the unfused math path;
- ``masksam``: bf16 inputs through ``masksam.backbones.common.attention``: under autograd cast to float32, the
  float32 kernel, the output cast back to bf16 (casts included); without autograd the bf16 kernel.

Usage::

    python benchmarks/bench_cpu_attention.py [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from masksam.backbones.common import attention

# name: (q shape, k/v shape, additive bias shape or None); batch = windows or 2 patches × 4 slices × 6 queries
SHAPES = {
    "TinyViT stage 2 (49-token windows)": ((800, 4, 49, 32), (800, 4, 49, 32), (1, 4, 49, 49)),
    "TinyViT stage 3 (196-token windows)": ((72, 5, 196, 32), (72, 5, 196, 32), (1, 5, 196, 196)),
    "TinyViT stage 4 (49-token windows)": ((200, 10, 49, 32), (200, 10, 49, 32), (1, 10, 49, 49)),
    "decoder image->tokens (1024 vs 8)": ((48, 8, 1024, 16), (48, 8, 8, 16), None),
    "decoder tokens->image (8 vs 1024)": ((48, 8, 8, 16), (48, 8, 1024, 16), None),
}


def plain(q, k, v, attn_mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def math_path(q, k, v, attn_mask):
    with sdpa_kernel([SDPBackend.MATH]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def masksam_attention(q, k, v, attn_mask):
    return attention(q, k, v, attn_mask=attn_mask)


WAYS: dict[str, tuple[torch.dtype, Callable]] = {
    "fp32": (torch.float32, plain),
    "bf16": (torch.bfloat16, plain),
    "bf16 math": (torch.bfloat16, math_path),
    "masksam": (torch.bfloat16, masksam_attention),
}


def best_milliseconds(shapes, dtype: torch.dtype, run: Callable, *, backward: bool, repeats: int) -> float:
    q_shape, kv_shape, bias_shape = shapes
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, generator=generator).to(dtype) for s in (q_shape, kv_shape, kv_shape))
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=generator).to(dtype)
    for tensor in (q, k, v):
        tensor.requires_grad_(backward)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = run(q, k, v, bias)
            if backward:
                out.float().sum().backward()
        times.append(time.perf_counter() - started)
    return 1000 * min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of {args.repeats}, milliseconds\n")
    for backward in (False, True):
        print(f"### {'forward + backward' if backward else 'forward'}\n")
        print(f"| shape | {' | '.join(WAYS)} |")
        print(f"|---|{'---|' * len(WAYS)}")
        for name, shapes in SHAPES.items():
            cells = [
                f"{best_milliseconds(shapes, dtype, run, backward=backward, repeats=args.repeats):.0f}"
                for dtype, run in WAYS.values()
            ]
            print(f"| {name} | {' | '.join(cells)} |", flush=True)
        print()


if __name__ == "__main__":
    main()
