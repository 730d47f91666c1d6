"""Peak memory and time of whole-volume prediction, and the measurement behind the Predictor's memory choice.

Tables printed:

1. ``memory``: peak resident memory (RSS) and wall time of predicting one synthetic CT volume
   (default 512×512×300 voxels of 0.8×0.8×2.5 mm, resampled to 1.0×1.0×3.0 mm), each strategy in its own
   process, from reading the file to writing the label map:

   - ``streamed argmax`` (masksam): finished slices are reduced to class ids at once; the class-id map is
     restored to the file grid;
   - ``streamed + probabilities``: the same, also keeping float16 scores and writing ``CASE.npz``;
   - ``full accumulator``: the whole (K, T, H, W) float32 score map accumulated, then the argmax;
   - ``file-grid scores``: the whole score map resampled to the file grid (K float32 volumes), then the argmax
     (nnU-Net's order); run only for ``--naive-classes`` classes because it needs K × 1.2 GB here.

   The model is a pointwise stand-in (masks from voxel intensities), so the numbers measure the inference path
   (preprocessing, windows, blending, restoring, writing), not a network. ``--model tiny`` uses the tiny
   MaskSAM backbone instead (slow on a CPU for large volumes).
2. ``speed``: windows per second and seconds per case of the tiny MaskSAM backbone (tiny preset: patch
   2×64×64, 4 queries, 3 classes) on a small MRI-sized volume, with and without mirroring TTA.

Usage::

    python benchmarks/bench_predict.py [--shape 512 512 300] [--classes 16] [--naive-classes 4] [--threads 1]

Torch runs on ``--threads`` threads (default 1: on a shared 2-core machine two threads can be many times slower).

Measured on the 2-core development machine (shared, so times vary by ±30 %)::

    memory: one case, model pointwise, patch (8, 128, 128), no TTA, 1 thread(s)
    strategy                K   peak RSS GB  above start GB  seconds
    streamed argmax         16  2.34         1.97            110.6
    streamed+probabilities  16  3.63         3.25            261.3
    full accumulator        16  5.90         5.53            154.5
    streamed argmax         4   2.43         2.05            20.7
    file-grid scores        4   4.23         3.85            21.5

    speed: tiny MaskSAM, 1 thread(s)
    model, volume     TTA  windows  windows/s  seconds
    tiny, 10×160×160  off  144      92.8       1.55
    tiny, 10×160×160  on   576      100.2      5.75

The streamed peak does not grow with K; about 1.2 GB of it is ``resample_label`` taking the class-id map back
to the 512×512×300 grid (three float32 volumes per class step), 0.8 GB reading and 1.2 GB preprocessing the
input. File-grid scores would need about 13 GB at K = 16 (K float32 volumes, twice, plus the score map).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from masksam.data.io import read_volume, write_volume
from masksam.data.plans import NormalizationPlan, Plans
from masksam.data.preprocessing import preprocess_arrays, restore_original_geometry
from masksam.inference.predictor import Predictor
from masksam.inference.sliding_window import sliding_window_scores
from masksam.model.config import preset_config
from masksam.model.masksam import MaskSamOutput, build_masksam
from masksam.training.checkpoint import TrainedModel

SPACING = (0.8, 0.8, 2.5)  # (X, Y, Z) mm of the synthetic CT
TARGET_SPACING = (3.0, 1.0, 1.0)  # (T, H, W) mm after preprocessing
PATCH = (8, 128, 128)


class PointwiseModel(nn.Module):
    """Stand-in for MaskSAM: query q is class q with a mask around its own intensity band."""

    def __init__(self, num_classes: int, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = preset_config("tiny", num_classes=num_classes, num_queries=num_classes, patch_size=patch)

    def forward(self, volume: torch.Tensor) -> MaskSamOutput:
        batch, _, slices, height, width = volume.shape
        queries = self.config.num_queries
        intensity = volume.mean(dim=1)  # (B, T, H, W)
        centres = torch.linspace(-2, 2, queries, device=volume.device)
        masks = 4 * (1 - (intensity[:, :, None] - centres.view(1, 1, -1, 1, 1)) ** 2)  # (B, T, N, H, W)
        masks = masks.reshape(batch * slices, queries, height, width)  # (B*T, N, H, W)
        logits = torch.zeros(queries, queries + 1, device=volume.device)
        logits[torch.arange(queries), torch.arange(queries)] = 6.0
        logits = logits.expand(batch * slices, -1, -1)  # (B*T, N, K+1)
        boxes = torch.zeros(batch * slices, queries, 4, device=volume.device)
        return MaskSamOutput(logits, masks, masks, boxes, boxes)


def ct_plans(num_classes: int, patch: tuple[int, int, int]) -> Plans:
    return Plans(
        dataset_name="SyntheticCT",
        channel_names={"0": "CT"},
        labels={"background": 0, **{f"organ{c}": c for c in range(1, num_classes)}},
        num_classes=num_classes,
        file_ending=".nii.gz",
        transpose=(2, 0, 1),
        original_median_spacing=SPACING,
        original_median_shape=(512, 512, 300),
        target_spacing=TARGET_SPACING,
        anisotropic=False,
        median_shape=(250, 410, 410),
        normalization=(NormalizationPlan("ct", clip_low=-1000, clip_high=1000, mean=50.0, std=300.0),),
        patch_size=patch,
        num_queries=num_classes,
    )


def write_synthetic_ct(path: Path, shape: tuple[int, int, int]) -> None:
    """Air around an elliptic body with soft-tissue, organ and bone intensities, written as int16 NIfTI."""
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]
    volume = np.empty(shape, np.int16)
    for z in range(shape[2]):  # slice by slice keeps the float temporaries small
        zz = 2 * z / max(shape[2] - 1, 1) - 1
        body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
        organ = ((x - 0.3) ** 2 + (y + 0.1) ** 2 + 0.3 * zz**2) < 0.08
        bone = (x**2 + (y - 0.45) ** 2) < 0.01
        hu = np.where(body, 40.0, -1000.0) + 80.0 * organ + 900.0 * bone
        volume[:, :, z] = (hu + rng.normal(0, 20, hu.shape)).astype(np.int16)
    write_volume(volume, np.diag([*SPACING, 1.0]), path)


def build_predictor(model: str, num_classes: int, patch: tuple[int, int, int]) -> Predictor:
    plans = ct_plans(num_classes, patch)
    if model == "tiny":
        config = preset_config("tiny", num_classes=num_classes, num_queries=num_classes, patch_size=patch)
        network = build_masksam(config).eval()
    else:
        network = PointwiseModel(num_classes, patch).eval()
    return Predictor([TrainedModel(network, plans, {}, Path(model))], tta=False, windows_per_batch=4)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def run_strategy(strategy: str, source: Path, output: Path, model: str, num_classes: int) -> dict:
    """One strategy in this process; returns peak RSS and time."""
    predictor = build_predictor(model, num_classes, PATCH)
    base = peak_rss_gb()
    started = time.perf_counter()
    if strategy.startswith("streamed"):
        predictor.predict_case([source], output, save_probabilities=strategy == "streamed+probabilities")
    else:
        volume = read_volume(source)
        preprocessed, _, properties = preprocess_arrays(volume.array[None], None, volume.geometry, predictor.plans)
        with torch.inference_mode():
            scores = sliding_window_scores(
                torch.from_numpy(preprocessed),
                predictor.score_patches,
                num_classes=num_classes,
                config=predictor.window,
            ).numpy()  # (K, T, H, W) float32
        del preprocessed
        if strategy == "full accumulator":
            labels, _ = restore_original_geometry(scores.argmax(axis=0).astype(np.uint8), properties, is_label=True)
        else:
            file_scores, _ = restore_original_geometry(scores, properties, is_label=False)  # (K, X, Y, Z)
            labels = file_scores.argmax(axis=0).astype(np.uint8)
        write_volume(np.ascontiguousarray(labels), volume.geometry.affine, output, reference=source)
    return {"seconds": time.perf_counter() - started, "peak_gb": peak_rss_gb(), "base_gb": base}


def speed_table(threads: int) -> list[tuple[str, ...]]:
    """Tiny MaskSAM on a 10-slice 160×160 volume: windows per second with and without mirroring."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = preset_config("tiny")
    plans = ct_plans(config.num_classes, config.patch_size)
    network = build_masksam(config).eval()
    image = np.random.default_rng(0).normal(size=(1, 10, 160, 160)).astype(np.float32)
    rows = []
    for tta in (False, True):
        predictor = Predictor([TrainedModel(network, plans, {}, Path("tiny"))], tta=tta, windows_per_batch=4)
        started = time.perf_counter()
        predictor.predict_preprocessed(image)
        seconds = time.perf_counter() - started
        windows = 9 * 4 * 4 * (4 if tta else 1)  # T starts 0..8, H and W starts 0, 32, 64, 96
        rows.append(
            ("tiny, 10×160×160", "on" if tta else "off", str(windows), f"{windows / seconds:.1f}", f"{seconds:.2f}")
        )
    return rows


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="(X, Y, Z) of the synthetic CT")
    parser.add_argument("--classes", type=int, default=16, help="K for the streamed and full-accumulator runs")
    parser.add_argument("--naive-classes", type=int, default=4, help="K for the file-grid-scores run (0: skip)")
    parser.add_argument("--model", choices=("pointwise", "tiny"), default="pointwise")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one strategy in a child process
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        print(json.dumps(run_strategy(args.run, Path(args.source), Path(args.output), args.model, args.classes)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "ct_0000.nii"
        write_synthetic_ct(source, tuple(args.shape))
        input_gb = np.prod(args.shape) * 4 / 2**30
        print(f"synthetic CT {tuple(args.shape)} ({input_gb:.2f} GB as float32), spacing {SPACING} -> {TARGET_SPACING}")
        runs = [
            ("streamed argmax", args.classes),
            ("streamed+probabilities", args.classes),
            ("full accumulator", args.classes),
        ]
        if args.naive_classes:
            runs += [("streamed argmax", args.naive_classes), ("file-grid scores", args.naive_classes)]
        rows = []
        for strategy, classes in runs:
            command = [
                sys.executable,
                __file__,
                "--run",
                strategy,
                "--source",
                str(source),
                "--output",
                str(Path(tmp) / "out" / "ct.nii.gz"),
                "--classes",
                str(classes),
                "--model",
                args.model,
                "--threads",
                str(args.threads),
            ]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            rows.append(
                (
                    strategy,
                    str(classes),
                    f"{result['peak_gb']:.2f}",
                    f"{result['peak_gb'] - result['base_gb']:.2f}",
                    f"{result['seconds']:.1f}",
                )
            )
        print_table(
            f"memory: one case, model {args.model}, patch {PATCH}, no TTA, {args.threads} thread(s)",
            ("strategy", "K", "peak RSS GB", "above start GB", "seconds"),
            rows,
        )
    if not args.skip_speed:
        print_table(
            f"speed: tiny MaskSAM, {args.threads} thread(s)",
            ("model, volume", "TTA", "windows", "windows/s", "seconds"),
            speed_table(args.threads),
        )


if __name__ == "__main__":
    main()
