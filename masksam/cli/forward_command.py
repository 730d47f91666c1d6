"""`masksam forward`: one MaskSAM forward pass on a synthetic patch, with a printed summary.

A quick check that an installation (and a weights file) works, and how long one patch takes here.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def synthetic_patch(batch: int, channels: int, slices: int, height: int, width: int, seed: int = 0):
    """(B, C, T, H, W) z-scored image of nested ellipsoids with noise (a stand-in for an MRI patch)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    t = torch.linspace(-1, 1, slices).view(slices, 1, 1)
    y = torch.linspace(-1, 1, height).view(1, height, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, width)
    radius = (x / 0.7) ** 2 + (y / 0.5) ** 2 + (t / 1.5) ** 2
    volume = (radius < 1).float() + (radius < 0.4).float()  # (T, H, W) with three intensity levels
    volume = volume.expand(batch, channels, slices, height, width)
    noisy = volume + 0.1 * torch.randn(volume.shape, generator=generator)
    return (noisy - noisy.mean()) / noisy.std()


def timed_forward(model, volume, device):
    """``model(volume)`` without autograd, and its wall-clock seconds.

    CUDA runs kernels asynchronously: the clock starts after the queued work (the input's copy) is done and
    stops after the forward's kernels are, so the time is the forward's, not the time to queue it.
    """
    import torch

    def synchronize() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        output = model(volume)
    synchronize()
    return output, time.perf_counter() - started


def forward(
    backbone: str = typer.Option("tiny", "--backbone", "-b", help="vit_b, vit_l, vit_h, lite_medsam or tiny."),
    preset: str = typer.Option("tiny", "--preset", "-p", help="acdc, synapse, amos or tiny (patch size, queries)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Official weights of the backbone (strict)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Patches per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Build MaskSAM, run it once on a synthetic patch, and print output shapes, parameters and time."""
    from rich.console import Console
    from rich.table import Table

    from masksam.devices import resolve_device
    from masksam.model.config import preset_config
    from masksam.model.masksam import build_masksam
    from masksam.model.parameters import count_parameters

    config = preset_config(preset, backbone=backbone)
    target = resolve_device(device)
    model = build_masksam(config, checkpoint).to(target).eval()
    volume = synthetic_patch(batch, config.in_channels, *config.patch_size).to(target)
    output, elapsed = timed_forward(model, volume, target)
    report = count_parameters(model)

    console = Console()
    weights = str(checkpoint) if checkpoint else "random (no --checkpoint)"
    console.print(f"MaskSAM on backbone [bold]{backbone}[/] ({weights}), preset {preset}, device {device}")
    table = Table(
        title=f"one forward pass of a {batch}×{config.in_channels}×{'×'.join(map(str, config.patch_size))} patch"
    )
    table.add_column("output")
    table.add_column("shape", justify="right")
    table.add_column("meaning")
    meanings = {
        "class_logits": "per slice and query: K classes + no-object",
        "mask_logits": "per slice and query: final mask",
        "aux_mask_logits": "prompt generator: auxiliary masks",
        "aux_boxes": "prompt generator: learned boxes (xyxy, 0..1)",
        "prompt_boxes": "boxes given to SAM's prompt encoder",
    }
    for name, meaning in meanings.items():
        table.add_row(name, "×".join(map(str, getattr(output, name).shape)), meaning)
    console.print(table)
    classes = output.class_logits.softmax(-1).argmax(-1)
    console.print(
        f"predicted class of each query on slice 0: {classes[0].tolist()} (index {config.num_classes} = no object)"
    )
    console.print(
        f"parameters: {report.tunable / 1e6:.2f}M tunable, {report.frozen / 1e6:.2f}M frozen; "
        f"forward time {elapsed:.2f} s"
    )
