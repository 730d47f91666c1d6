"""Training loader: batch shapes and dtypes, foreground oversampling, reproducibility from a seed, image and label
cut and augmented together."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from alignment import assert_label_follows_image, coordinate_image
from dataset_builders import make_dataset

from masksam.data.augmentation import AugmentationConfig
from masksam.data.cache import CachedCase, CaseCache
from masksam.data.loader import PatchStream, make_train_loader, read_split
from masksam.data.pipeline import plan_and_preprocess
from masksam.data.plans import Plans
from masksam.errors import ConfigError, DatasetError

PATCH = (4, 32, 32)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("raw") / "Dataset002_Loader", num_cases=4)
    out = tmp_path_factory.mktemp("plans")
    plan_and_preprocess(root, out, num_workers=0, progress=False, num_folds=2)
    return out


def _batches(loader, count):
    return list(itertools.islice(iter(loader), count))


@pytest.mark.parametrize("augmentation", [None, AugmentationConfig()], ids=["plain", "augmented"])
def test_batch_shapes_and_dtypes(planned, augmentation):
    loader = make_train_loader(planned, batch_size=3, patch_size=PATCH, num_workers=0, augmentation=augmentation)
    image, label = next(iter(loader))
    assert image.shape == (3, 1, *PATCH) and image.dtype == torch.float32
    assert label.shape == (3, *PATCH) and label.dtype == torch.uint8  # the cache's type: 8x less to copy than int64
    assert set(label.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("pin_memory", [False, True], ids=["cpu-run", "cuda-run"])
def test_batches_are_pinned_for_a_gpu_run(planned, pin_memory):
    loader = make_train_loader(planned, batch_size=2, patch_size=PATCH, num_workers=0, pin_memory=pin_memory)
    assert loader.pin_memory is pin_memory  # pinned batches make the trainer's non_blocking copies asynchronous


def test_reproducible_from_seed(planned):
    def run(seed):
        return _batches(make_train_loader(planned, batch_size=2, patch_size=PATCH, num_workers=0, seed=seed), 4)

    first, again, other = run(7), run(7), run(8)
    for (a_img, a_lbl), (b_img, b_lbl) in zip(first, again, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_lbl, b_lbl)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.slow
def test_reproducible_with_two_workers(planned):
    def run():
        return _batches(make_train_loader(planned, batch_size=2, patch_size=PATCH, num_workers=2, seed=3), 4)

    for (a_img, _), (b_img, _) in zip(run(), run(), strict=True):
        assert torch.equal(a_img, b_img)


def test_last_third_of_each_batch_has_foreground(planned):
    train, _ = read_split(planned, 0)
    cache = planned / Plans.load(planned).preprocessed_folder
    stream = PatchStream(cache, train, (1, 8, 8), batch_size=3, augmentation=None, seed=0)
    items = list(itertools.islice(iter(stream), 60))
    forced = [label for index, (_, label) in enumerate(items) if index % 3 == 2]
    assert all(label.any() for label in forced)


def test_patches_keep_image_and_label_aligned_through_cutting_padding_and_augmentation(tmp_path):
    """A cached case whose image channels are its voxels' coordinates: whatever region the stream cuts (padded at
    the case's border or not), rotates, scales and mirrors, each label is the case's label where its image came from.
    """
    size = (6, 48, 100)  # rotated regions often reach past 48 rows: padded there
    image = coordinate_image(size)  # (4, T, H, W)
    label = torch.randint(0, 4, size, generator=torch.Generator().manual_seed(0))  # every voxel its own class
    foreground = np.argwhere(label.numpy() > 0)[::7]  # (M, 3) sampled foreground voxels
    foreground = np.concatenate([label.numpy()[tuple(foreground.T)][:, None], foreground], axis=1)
    case = CachedCase("coords", image.numpy(), label.numpy().astype(np.uint8), foreground.astype(np.int32), {})
    CaseCache(tmp_path).write(case)
    spatial_only = AugmentationConfig(
        rotation_probability=1,
        scale_probability=1,
        noise_probability=0,
        blur_probability=0,
        brightness_probability=0,
        contrast_probability=0,
        low_resolution_probability=0,
        gamma_probability=0,
        gamma_inverted_probability=0,
    )
    stream = PatchStream(tmp_path, ["coords"], (3, 32, 40), batch_size=2, augmentation=spatial_only, seed=0)
    padded = 0
    for patch_image, patch_label in itertools.islice(iter(stream), 12):
        assert_label_follows_image(patch_image, patch_label, label)
        padded += bool((patch_image[3] < 1 - 1e-4).any())
    assert 0 < padded < 12  # both cases were seen: some regions reached past the case, some did not


def test_read_split(planned):
    train, val = read_split(planned, 1)
    assert train and val and set(train).isdisjoint(val)
    everything, none = read_split(planned, -1)
    assert sorted(everything) == sorted(train + val) and none == []
    with pytest.raises(ConfigError, match="fold 7"):
        read_split(planned, 7)


def test_no_cases_is_an_error(planned):
    with pytest.raises(DatasetError, match="no cases"):
        PatchStream(planned / "preprocessed", [], PATCH, batch_size=2)
