"""Optimiser steps per minute of the real training step on real ACDC batches, for each cost setting.

Each row builds a `Trainer` (frozen, pretrained LiteMedSAM when `masksam weights lite_medsam` has been run) on the
ACDC plans and times ``--steps`` calls of ``Trainer.train_step`` (forward, matching or fixed pairs, every loss
term, backward, AdamW step) on one fixed loader batch, after one untimed warm-up step; the median is reported.
All rows run in this process, one after another, on the same batch, so their ratios are measured side by side.

Rows (cumulative, as DESIGN §10 "cheaper steps" and issue 13 add them):

- ``paper``: 8 matched queries with background, 256² input, encoder adapters trained from the first step;
- ``paper+denoising``: + one group of denoising queries per class (their decoder work);
- ``class_slots``: 3 class-slot queries (+ 3 denoising) instead of 8 (+ 4);
- ``class_slots_128``: the same at 128²;
- ``paused_encoder``: the same with the encoder's adapters paused (the encoder without autograd), as in the
  first half of a default run;
- ``class_slots_128_bf16``, ``paused_encoder_bf16``: the last two under bf16 autocast (what ``--amp auto`` picks
  on a CPU with fast bf16 matrix products, AMX; where bf16 is emulated these rows are very slow);
- ``default``: what ``masksam train`` does by default in float32 (half the steps paused, half not): the mean of
  the two fp32 rows; ``default_bf16`` the same for the bf16 rows.

Every row but the bf16 ones runs in float32 (``--amp off``), whatever ``auto`` would pick on this machine.

Usage::

    python benchmarks/bench_steps_per_minute.py [--dataset ../shared/data/Dataset027_ACDC] [--steps 2]
        [--threads N] [--output bench_steps]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset027_ACDC"

# name: (train options as model_config_for / TrainingConfig fields, encoder paused)
FP32 = {"amp": "off"}
BF16 = {"amp": "bf16"}
ROWS: dict[str, tuple[dict, dict, bool]] = {
    "paper": ({"queries": "matched", "image_size": 256}, {"denoising_groups": 0, **FP32}, False),
    "paper+denoising": ({"queries": "matched", "image_size": 256}, {"denoising_groups": 1, **FP32}, False),
    "class_slots": ({"queries": "class_slots", "image_size": 256}, {"denoising_groups": 1, **FP32}, False),
    "class_slots_128": ({"queries": "class_slots", "image_size": 128}, {"denoising_groups": 1, **FP32}, False),
    "paused_encoder": ({"queries": "class_slots", "image_size": 128}, {"denoising_groups": 1, **FP32}, True),
    "class_slots_128_bf16": ({"queries": "class_slots", "image_size": 128}, {"denoising_groups": 1, **BF16}, False),
    "paused_encoder_bf16": ({"queries": "class_slots", "image_size": 128}, {"denoising_groups": 1, **BF16}, True),
}


def time_row(name: str, args, plans, plans_dir: Path, weights) -> float:
    """Median seconds of one training step of the row."""
    import torch

    from masksam.training.config import TrainingConfig
    from masksam.training.setup import model_config_for
    from masksam.training.trainer import Trainer

    model_options, training_options, paused = ROWS[name]
    model_config = model_config_for(plans, backbone="lite_medsam", **model_options)
    training = replace(
        TrainingConfig(num_workers=0, validation_patches=0, final_validation=False, threads=args.threads),
        **training_options,
        encoder_adapters_from=1.0 if paused else 0.0,
    )
    trainer = Trainer(
        model_config=model_config,
        training_config=training,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=args.output / name,
        backbone_checkpoint=weights,
        show_progress=False,
    )
    torch.manual_seed(0)
    image, label = next(iter(trainer.build_loader(epoch=0)))
    trainer.pause_encoder_adapters()
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        trainer.train_step(image, label)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--output", type=Path, default=Path("bench_steps"))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: measured)")
    args = parser.parse_args()

    from masksam.backbones.weights import find_cached_weights
    from masksam.data.plans import Plans

    plans_dir = args.output / "plans"
    if not (plans_dir / "plans.json").is_file():
        subprocess.run([sys.executable, "-m", "masksam", "plan", str(args.dataset), "-o", str(plans_dir)], check=True)
    plans = Plans.load(plans_dir)
    weights = find_cached_weights("lite_medsam")
    seconds = {}
    for name in ROWS:
        seconds[name] = time_row(name, args, plans, plans_dir, weights)
        print(f"{name}: {seconds[name]:.2f} s per step", flush=True)
    seconds["default"] = (seconds["class_slots_128"] + seconds["paused_encoder"]) / 2
    seconds["default_bf16"] = (seconds["class_slots_128_bf16"] + seconds["paused_encoder_bf16"]) / 2
    print(
        f"\nACDC batch of {plans.batch_size} × {'×'.join(map(str, plans.patch_size))} patches; weights: "
        f"{'real LiteMedSAM' if weights else 'random (same cost)'}\n"
    )
    print("| setting | s/step | steps/min | × paper |")
    print("|---|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {60 / value:.1f} | {seconds['paper'] / value:.2f} |")


if __name__ == "__main__":
    main()
