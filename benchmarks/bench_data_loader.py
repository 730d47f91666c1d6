"""Throughput of the training data loader, and the measurements behind two design choices.

Tables printed:

1. ``loader``: patches/second of ``make_train_loader`` (ACDC preset 4x256x256 patches, batch 2), with and
   without augmentation, on 0 and 2 workers.
2. ``augmentation`` (``--compare``): our torch augmentation vs batchgeneratorsv2's nnU-Net pipeline (same
   probabilities), both in 2 DataLoader workers, if batchgeneratorsv2 is installed.
3. ``cache format`` (``--compare``): random 4x256x256 patch reads from memory-mapped ``.npy`` vs blosc2
   (nnU-Net's format), if blosc2 is installed.

Usage::

    python benchmarks/bench_data_loader.py [--dataset DIR] [--plans-dir DIR] [--seconds 8] [--compare]

The dataset is planned and preprocessed into ``--plans-dir`` first (skipped when already up to date).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from masksam.data import AugmentationConfig, CaseCache, Plans, make_train_loader, plan_and_preprocess, read_split
from masksam.data.augmentation import SpatialParams, input_size_for
from masksam.data.sampling import sample_patch

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Dataset027_ACDC"


def measure(loader: DataLoader, seconds: float, warmup: int = 3) -> float:
    """Patches per second drawn from an endless loader over about ``seconds``."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        image, _ = next(iterator)
        count += image.shape[0]
    rate = count / (time.perf_counter() - start)
    del iterator
    return rate


class BatchgeneratorsStream(IterableDataset):
    """The same sampling as PatchStream, augmented with batchgeneratorsv2's nnU-Net transforms."""

    def __init__(self, folder: Path, case_ids: list[str], patch_size: tuple[int, int, int], batch_size: int):
        self.folder, self.case_ids, self.patch_size, self.batch_size = folder, case_ids, patch_size, batch_size

    def _transforms(self):
        from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
        from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
        from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
        from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
        from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
        from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
        from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
        from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
        from batchgeneratorsv2.transforms.utils.random import RandomTransform

        return ComposeTransforms(
            [
                Convert3DTo2DTransform(),
                SpatialTransform(
                    self.patch_size[1:],
                    0,
                    random_crop=False,
                    p_rotation=0.2,
                    rotation=(-math.pi, math.pi),
                    p_scaling=0.2,
                    scaling=(0.7, 1.4),
                    p_synchronize_scaling_across_axes=1,
                    mode_seg="nearest",
                ),
                Convert2DTo3DTransform(),
                RandomTransform(GaussianNoiseTransform((0, 0.1), 1, True), 0.1),
                RandomTransform(GaussianBlurTransform((0.5, 1.0), False, False, 0.5, benchmark=True), 0.2),
                RandomTransform(MultiplicativeBrightnessTransform((0.75, 1.25), False, 1), 0.15),
                RandomTransform(ContrastTransform(BGContrast((0.75, 1.25)), True, False, 1), 0.15),
                RandomTransform(SimulateLowResolutionTransform((0.5, 1), False, True, (0,), None, 0.5), 0.25),
                RandomTransform(GammaTransform(BGContrast((0.7, 1.5)), 1, False, 1, 1), 0.1),
                RandomTransform(GammaTransform(BGContrast((0.7, 1.5)), 0, False, 1, 1), 0.3),
                MirrorTransform((0, 1, 2)),
            ]
        )

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([0, worker])
        torch.manual_seed(worker)
        transforms = self._transforms()
        cache = CaseCache(self.folder)
        # batchgeneratorsv2 draws rotation/scale inside the transform, so it always needs the worst-case region.
        size = input_size_for(self.patch_size, SpatialParams(math.pi / 4, 1.4))
        count = 0
        while True:
            case = cache.read(self.case_ids[int(rng.integers(len(self.case_ids)))])
            force = count % self.batch_size >= round(self.batch_size * 0.67)
            patch = sample_patch(case.image, case.label, case.foreground, size, rng, force_foreground=force)
            out = transforms(
                image=torch.from_numpy(patch.image), segmentation=torch.from_numpy(patch.label[None].astype(np.int16))
            )
            yield out["image"], out["segmentation"][0].long()
            count += 1


def keep_up(loader: DataLoader, steps: int) -> tuple[float, float]:
    """Trains a tiny 3D conv net on the loader's batches; returns (ms per step computing, ms per step waiting)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv3d(8, 4, 3, padding=1)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    iterator = iter(loader)
    next(iterator)
    wait = compute = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        image, label = next(iterator)
        middle = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        wait, compute = wait + middle - start, compute + time.perf_counter() - middle
    del iterator
    return 1000 * compute / steps, 1000 * wait / steps


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def cache_format_table(plans_dir: Path, plans: Plans, cases: list[str], reads: int) -> list[tuple[str, ...]]:
    """Write time, size on disk and random patch reads/s for .npy (mmap) and blosc2."""
    import blosc2

    cache = CaseCache(plans_dir / plans.preprocessed_folder)
    arrays = {c: np.array(cache.read(c, mmap=False).image) for c in cases}
    rows = []
    t_patch, h_patch, w_patch = plans.patch_size
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("npy (mmap)", "blosc2"):
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            start = time.perf_counter()
            for case_id, array in arrays.items():
                if name == "blosc2":
                    chunks = (array.shape[0], min(t_patch, array.shape[1]), *array.shape[2:])
                    blosc2.asarray(
                        np.ascontiguousarray(array),
                        urlpath=str(folder / f"{case_id}.b2nd"),
                        chunks=chunks,
                        mode="w",
                        cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3},
                    )
                else:
                    np.save(folder / f"{case_id}.npy", array)
            write_s = time.perf_counter() - start
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            if name == "blosc2":
                opened = {c: blosc2.open(str(folder / f"{c}.b2nd"), mode="r", mmap_mode="r") for c in cases}
            else:
                opened = {c: np.load(folder / f"{c}.npy", mmap_mode="r") for c in cases}
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for _ in range(reads):
                array = opened[cases[int(rng.integers(len(cases)))]]
                _, t, h, w = array.shape
                t0, h0, w0 = (
                    int(rng.integers(0, max(1, d - p) + 1)) for d, p in ((t, t_patch), (h, h_patch), (w, w_patch))
                )
                np.array(array[:, t0 : t0 + t_patch, h0 : h0 + h_patch, w0 : w0 + w_patch])  # real copy
            rate = reads / (time.perf_counter() - start)
            rows.append((name, f"{write_s / len(cases) * 1000:.1f}", f"{size:.1f}", f"{rate:.0f}"))
    return rows


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--plans-dir", type=Path, default=Path(tempfile.gettempdir()) / "masksam_bench_acdc")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per row")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="also compare with batchgeneratorsv2 and blosc2")
    args = parser.parse_args()

    start = time.perf_counter()
    plan_and_preprocess(args.dataset, args.plans_dir, num_workers=2, progress=False)
    print(f"plan + cache ready in {time.perf_counter() - start:.1f} s ({args.plans_dir})")
    plans = Plans.load(args.plans_dir)
    train, _ = read_split(args.plans_dir, 0)
    print(
        f"cpu cores: {os.cpu_count()}, torch threads (main): {torch.get_num_threads()}, "
        f"patch (T,H,W) {plans.patch_size}, batch {args.batch_size}, {len(train)} training cases (fold 0)"
    )

    rows = []
    for augmented in (True, False):
        for workers in (0, 2):
            loader = make_train_loader(
                args.plans_dir,
                fold=0,
                batch_size=args.batch_size,
                num_workers=workers,
                seed=0,
                augmentation=AugmentationConfig() if augmented else None,
            )
            rate = measure(loader, args.seconds)
            rows.append(
                (
                    "masksam",
                    "on" if augmented else "off",
                    str(workers),
                    f"{rate:.1f}",
                    f"{1000 * args.batch_size / rate:.0f}",
                )
            )
    print_table("loader (patches/s)", ("loader", "augmentation", "workers", "patches/s", "ms/batch"), rows)

    rows = []
    for workers in (0, 2):
        loader = make_train_loader(args.plans_dir, fold=0, batch_size=args.batch_size, num_workers=workers, seed=0)
        compute, wait = keep_up(loader, steps=20)
        rows.append((str(workers), f"{compute:.0f}", f"{wait:.1f}"))
    print_table(
        "keeping up with a tiny 3D conv net (2 convs, 8 channels), augmentation on",
        ("workers", "train step ms", "waiting for data ms/step"),
        rows,
    )

    if args.compare:
        rows = []
        folder = args.plans_dir / plans.preprocessed_folder
        for name in ("masksam (torch)", "batchgeneratorsv2"):
            if name.startswith("batch") and not _has("batchgeneratorsv2"):
                rows.append((name, "not installed", ""))
                continue
            if name.startswith("masksam"):
                loader = make_train_loader(args.plans_dir, fold=0, batch_size=args.batch_size, num_workers=2, seed=0)
            else:
                stream = BatchgeneratorsStream(folder, train, plans.patch_size, args.batch_size)
                loader = DataLoader(
                    stream,
                    batch_size=args.batch_size,
                    num_workers=2,
                    worker_init_fn=_worker_init,
                    prefetch_factor=4,
                    persistent_workers=True,
                )
            rate = measure(loader, args.seconds)
            rows.append((name, f"{rate:.1f}", f"{1000 * args.batch_size / rate:.0f}"))
        print_table("augmentation, 2 workers (patches/s)", ("implementation", "patches/s", "ms/batch"), rows)
        if _has("blosc2"):
            rows = cache_format_table(args.plans_dir, plans, train[:30], reads=300)
            print_table(
                "cache format, 30 cases, 300 random patch reads",
                ("format", "write ms/case", "MiB on disk", "patch reads/s"),
                rows,
            )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
