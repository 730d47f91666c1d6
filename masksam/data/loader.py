"""Training batches: an endless stream of augmented patches from the cache, in background workers.

Reproducibility: worker ``w`` of rank ``r`` draws from ``numpy.random.SeedSequence([seed, r, w])``; the
DataLoader takes whole batches from the workers in a fixed round-robin order, so the same seed, worker
count and rank give the same batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from masksam.data.augmentation import AugmentationConfig, augment, draw_spatial, input_size_for
from masksam.data.cache import CachedCase, CaseCache
from masksam.data.plans import Plans
from masksam.data.sampling import sample_patch
from masksam.errors import ConfigError, DatasetError


class PatchStream(IterableDataset):
    """Endless (image, label) training patches.

    Each item: image (C, T, H, W) float32, label (T, H, W) class ids, uint8 (int16 for more than 256 classes: a
    small type, 8 times less to copy to the GPU than int64; widen it there). Within every run of ``batch_size``
    consecutive items (one batch), the last ``round(batch_size * oversample_foreground_percent)`` are
    centred on foreground (nnU-Net's rule).

    Args:
        cache_folder: Folder of preprocessed cases.
        case_ids: Cases to sample from (uniformly).
        patch_size: (T, H, W).
        batch_size: Batch size the DataLoader will use (for the oversampling positions).
        oversample_foreground_percent: Fraction of each batch forced onto foreground.
        augmentation: Augmentation settings, or None for plain random crops.
        seed: Base seed.
        rank: Distributed rank (different ranks see different streams).
    """

    def __init__(
        self,
        cache_folder: Path,
        case_ids: Sequence[str],
        patch_size: tuple[int, int, int],
        *,
        batch_size: int,
        oversample_foreground_percent: float = 0.33,
        augmentation: AugmentationConfig | None = None,
        seed: int = 0,
        rank: int = 0,
    ):
        super().__init__()
        if not case_ids:
            raise DatasetError(f"{cache_folder}: no cases to sample from; check the split and the cache")
        self.cache_folder = Path(cache_folder)
        self.case_ids = list(case_ids)
        self.patch_size = tuple(patch_size)
        self.batch_size = batch_size
        self.oversample_foreground_percent = oversample_foreground_percent
        self.augmentation = augmentation
        self.seed = seed
        self.rank = rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, worker]))
        cache = CaseCache(self.cache_folder)
        opened: dict[str, CachedCase] = {}
        random_slots = round(self.batch_size * (1 - self.oversample_foreground_percent))
        count = 0
        while True:
            case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
            if case_id not in opened:
                opened[case_id] = cache.read(case_id, mmap=True)
            case = opened[case_id]
            params = draw_spatial(self.augmentation, rng) if self.augmentation is not None else None
            size = input_size_for(self.patch_size, params)
            force = count % self.batch_size >= random_slots
            patch = sample_patch(case.image, case.label, case.foreground, size, rng, force_foreground=force)
            image = torch.from_numpy(patch.image)  # (C, T, H_in, W_in)
            label = torch.from_numpy(patch.label.astype(_label_dtype(patch.label), copy=False))  # (T, H_in, W_in)
            if self.augmentation is not None:
                with _one_thread(in_main_process=info is None):
                    image, label = augment(image, label, self.patch_size, params, self.augmentation, rng)
            yield image, label
            count += 1


def _label_dtype(label: np.ndarray) -> type:
    """The small integer type a label patch travels in: the cache's uint8, else int16."""
    return np.uint8 if label.dtype == np.uint8 else np.int16


@contextmanager
def _one_thread(*, in_main_process: bool) -> Iterator[None]:
    # Small per-patch ops lose more to OpenMP hand-offs than they gain (measured: 2 threads were several
    # times slower on a busy 2-core machine); workers are already single-threaded, the main process is not.
    if not in_main_process:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _worker_init(_: int) -> None:
    # Parallelism comes from the workers; one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)


def read_split(plans_dir: Path, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation case ids of ``fold`` from ``splits_final.json``.

    Args:
        plans_dir: Folder written by ``masksam plan``.
        fold: Fold index, or -1 for every case (no validation cases).

    Returns:
        (train case ids, val case ids).

    Raises:
        ConfigError: Missing splits file or fold out of range.
    """
    path = Path(plans_dir) / "splits_final.json"
    try:
        splits = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: splits_final.json not found; run 'masksam plan' first") from None
    if fold == -1:
        return sorted(set(splits[0]["train"]) | set(splits[0]["val"])), []
    if not 0 <= fold < len(splits):
        raise ConfigError(f"{path}: fold {fold} does not exist; choose 0..{len(splits) - 1} or -1 for all cases")
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def make_train_loader(
    plans_dir: Path,
    *,
    case_ids: Sequence[str] | None = None,
    fold: int = 0,
    batch_size: int | None = None,
    patch_size: tuple[int, int, int] | None = None,
    augmentation: AugmentationConfig | None = AugmentationConfig(),
    num_workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    prefetch_factor: int = 4,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader of endless training batches from a planned and preprocessed dataset.

    Each batch is ``(image, label)``: image (B, C, T, H, W) float32, label (B, T, H, W) uint8 class ids (int16
    beyond 256 classes).

    Args:
        plans_dir: Folder written by ``masksam plan`` (plans.json, splits_final.json, cache).
        case_ids: Cases to sample; default: the training cases of ``fold``.
        fold: Fold of ``splits_final.json`` (-1: all cases).
        batch_size: Default: the plans' batch size.
        patch_size: (T, H, W); default: the plans' patch size.
        augmentation: Augmentation settings (None: plain crops).
        num_workers: Background worker processes (0: in the calling process).
        seed: Base seed (reproducible streams).
        rank: Distributed rank.
        prefetch_factor: Batches each worker prepares ahead.
        pin_memory: Batches in page-locked memory, so that ``.to("cuda", non_blocking=True)`` copies
            asynchronously (for a CUDA run; pinning needs a GPU).

    Returns:
        The DataLoader (iterate it; it never ends).
    """
    plans = Plans.load(Path(plans_dir) / "plans.json")
    if case_ids is None:
        case_ids, _ = read_split(plans_dir, fold)
    batch_size = batch_size or plans.batch_size
    stream = PatchStream(
        Path(plans_dir) / plans.preprocessed_folder,
        case_ids,
        patch_size or plans.patch_size,
        batch_size=batch_size,
        oversample_foreground_percent=plans.oversample_foreground_percent,
        augmentation=augmentation,
        seed=seed,
        rank=rank,
    )
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        pin_memory=pin_memory,
        **extra,
    )
