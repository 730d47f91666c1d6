"""U-Net baseline: nnU-Net's level planning, config checks, network shapes, Dice + CE, and MONAI being optional."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from masksam.baselines.unet import DiceCrossEntropyLoss, UNet, UNetConfig, plan_levels, unet_config_for
from masksam.data.plans import Plans
from masksam.errors import ConfigError

K3, K1 = (3, 3, 3), (1, 3, 3)
IN_PLANE, NONE, ALL = (1, 2, 2), (1, 1, 1), (2, 2, 2)


def tiny_config(**overrides) -> UNetConfig:
    values = dict(
        patch_size=(2, 16, 16),
        in_channels=1,
        num_classes=3,
        channels=(4, 8, 8),
        kernel_sizes=(K1, K3, K3),
        strides=(NONE, IN_PLANE, IN_PLANE),
    )
    values.update(overrides)
    return UNetConfig(**values)


@pytest.mark.parametrize(
    ("patch", "spacing", "max_levels", "kernels", "strides"),
    [
        pytest.param(
            (4, 256, 256), (1.0, 1.0, 1.0), 6, (K3,) * 6, (NONE,) + (IN_PLANE,) * 5, id="acdc_plans_4_slices_in_plane"
        ),
        pytest.param(
            (4, 256, 256),
            (10.0, 1.5, 1.5),
            6,
            (K1, K1) + (K3,) * 4,  # in-plane spacing 1.5 -> 3 -> 6: within 2x of 10 mm from level 2 on
            (NONE,) + (IN_PLANE,) * 5,
            id="thick_slices_kernel_1_until_in_plane_catches_up",
        ),
        pytest.param(
            (20, 256, 224),
            (5.0, 1.5, 1.5),
            6,
            (K1,) + (K3,) * 5,
            (NONE, IN_PLANE, ALL, ALL, IN_PLANE, IN_PLANE),  # slices pooled while 20 -> 10 -> 5 voxels (>= 8)
            id="deep_patch_pools_slices_once_spacing_matches",
        ),
        pytest.param((2, 32, 32), (1.0, 1.0, 1.0), 6, (K3,) * 4, (NONE,) + (IN_PLANE,) * 3, id="stops_at_4_voxels"),
        pytest.param((4, 256, 256), (1.0, 1.0, 1.0), 3, (K3,) * 3, (NONE, IN_PLANE, IN_PLANE), id="max_levels"),
    ],
)
def test_plan_levels_follows_nnunet_rules(patch, spacing, max_levels, kernels, strides):
    assert plan_levels(patch, spacing, max_levels=max_levels) == (kernels, strides)


def test_config_for_plans_uses_the_plans_patch_and_classes(planned_dataset):
    plans = Plans.load(planned_dataset[1])
    config = unet_config_for(plans, base_channels=8, max_channels=16, max_levels=4)
    assert config.patch_size == plans.patch_size
    assert (config.in_channels, config.num_classes) == (1, 3)
    assert config.channels == (8, 16, 16, 16)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"channels": (4, 8)}, id="levels_disagree"),
        pytest.param({"channels": (4, 8), "kernel_sizes": (K3, K3), "strides": (NONE, ALL)}, id="two_levels"),
        pytest.param({"strides": (IN_PLANE, IN_PLANE, IN_PLANE)}, id="first_stride_not_1"),
        pytest.param({"patch_size": (3, 16, 16), "strides": (NONE, ALL, IN_PLANE)}, id="patch_not_divisible"),
        pytest.param({"num_classes": 1}, id="one_class"),
    ],
)
def test_config_rejects_inconsistent_values(overrides):
    with pytest.raises(ConfigError, match="U-Net config"):
        tiny_config(**overrides)


def test_config_round_trips_through_json():
    config = tiny_config(batch_dice=False)
    assert UNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown field"):
        UNetConfig.from_dict({**config.to_dict(), "depth": 3})


def test_network_maps_patches_to_class_logits():
    network = UNet(tiny_config())
    logits = network(torch.randn(2, 1, 2, 16, 16))
    assert logits.shape == (2, 3, 2, 16, 16)
    logits.sum().backward()
    assert all(p.grad is not None for p in network.parameters())


def reference_loss(logits: torch.Tensor, label: torch.Tensor, batch_dice: bool) -> tuple[float, float]:
    """Brute force in numpy: (soft Dice loss over foreground classes, cross-entropy)."""
    x = logits.double().numpy()
    y = label.numpy()
    num_classes = x.shape[1]
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.stack([(y == k) for k in range(num_classes)], axis=1).astype(np.float64)
    axes = (0, 2, 3, 4) if batch_dice else (2, 3, 4)
    intersection, predicted, reference = (p * onehot).sum(axes), p.sum(axes), onehot.sum(axes)
    dice = (2 * intersection + 1e-5) / (predicted + reference + 1e-5)
    foreground = dice[1:] if batch_dice else dice[:, 1:]
    picked = np.take_along_axis(p, y[:, None], axis=1)
    return 1.0 - float(foreground.mean()), float(-np.log(picked).mean())


@pytest.mark.parametrize("batch_dice", [pytest.param(True, id="batch_dice"), pytest.param(False, id="per_patch")])
def test_dice_ce_equals_brute_force(batch_dice):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 5, 4, generator=generator)
    label = torch.randint(0, 3, (2, 2, 5, 4), generator=generator)
    terms = DiceCrossEntropyLoss(batch_dice=batch_dice)(logits, label)
    dice, cross_entropy = reference_loss(logits, label, batch_dice)
    assert float(terms["dice"]) == pytest.approx(dice, rel=1e-5)
    assert float(terms["cross_entropy"]) == pytest.approx(cross_entropy, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(dice + cross_entropy, rel=1e-5)


def test_dice_ce_of_a_confident_correct_prediction_is_near_zero():
    label = torch.randint(0, 3, (1, 2, 6, 6), generator=torch.Generator().manual_seed(1))
    logits = 50.0 * torch.nn.functional.one_hot(label, 3).permute(0, 4, 1, 2, 3).float()  # (B, K, T, H, W)
    terms = DiceCrossEntropyLoss()(logits, label)
    assert float(terms["total"]) < 1e-6


@pytest.fixture
def without_monai(monkeypatch):
    for name in [name for name in sys.modules if name == "monai" or name.startswith("monai.")] + ["monai"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes every import of it fail


def test_missing_monai_is_one_line_with_the_install_hint(without_monai, planned_dataset, tmp_path):
    from masksam.baselines.unet_training import train_unet

    for build in (lambda: UNet(tiny_config()), lambda: train_unet(planned_dataset[1], tmp_path / "model")):
        with pytest.raises(ConfigError) as caught:
            build()
        message = str(caught.value)
        assert "\n" not in message and "pip install 'masksam[baselines]'" in message
    assert not (tmp_path / "model").exists()
