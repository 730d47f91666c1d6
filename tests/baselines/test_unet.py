"""U-Net baseline: nnU-Net's 3-D and 2-D planning, config checks, network shapes, losses, and MONAI being optional."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from inference.builders import make_plans

from masksam.baselines.unet import (
    DeepSupervisionLoss,
    DiceCrossEntropyLoss,
    UNet,
    UNetConfig,
    feature_map_elements,
    nnunet_2d_batch_size,
    plan_levels,
    plan_levels_2d,
    unet_config_for,
)
from masksam.data.plans import Plans
from masksam.errors import ConfigError

K3, K1 = (3, 3, 3), (1, 3, 3)
IN_PLANE, NONE, ALL = (1, 2, 2), (1, 1, 1), (2, 2, 2)


def tiny_config_2d(**overrides) -> UNetConfig:
    values = dict(
        patch_size=(1, 32, 32),
        in_channels=1,
        num_classes=3,
        channels=(4, 8, 8, 8),
        kernel_sizes=(K1,) * 4,
        strides=(NONE,) + (IN_PLANE,) * 3,
        configuration="2d",
        deep_supervision=True,
    )
    values.update(overrides)
    return UNetConfig(**values)


def acdc_like_plans() -> Plans:
    """Plans as ``masksam plan`` writes them for our ACDC copy: median 9×216×256 slices, spacing unknown (1 mm)."""
    plans = make_plans(num_classes=4, target_spacing=(1.0, 1.0, 1.0), anisotropic=False)
    return dataclasses.replace(plans, median_shape=(9, 216, 256), patch_size=(4, 256, 256))


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
    ("median_shape", "spacing", "patch", "kernels", "strides"),
    [
        pytest.param(
            (216, 256),
            (1.0, 1.0),
            (224, 256),  # 216 -> 108 -> 54 -> 27 -> 14 -> 7: five pools; 256 stops at 8 (< 12 alone); pad to 32
            ((3, 3),) * 6,
            ((1, 1),) + ((2, 2),) * 5,
            id="acdc_median_in_plane",
        ),
        pytest.param(
            (300, 100),
            (1.0, 1.0),
            (320, 112),  # the long axis pools once more alone (19 >= 12), then 10 < 12 stops it
            ((3, 3),) * 6,
            ((1, 1),) + ((2, 2),) * 4 + ((2, 1),),
            id="elongated_long_axis_pools_alone",
        ),
        pytest.param(
            (256, 256),
            (1.0, 3.0),
            (256, 256),
            ((3, 1),) + ((3, 3),) * 6,  # W's 3 mm is within 2x of H only after H is pooled once
            ((1, 1), (2, 1)) + ((2, 2),) * 5,
            id="anisotropic_in_plane",
        ),
        pytest.param((40, 36), (1.5, 1.5), (40, 40), ((3, 3),) * 4, ((1, 1),) + ((2, 2),) * 3, id="small_phantom"),
    ],
)
def test_plan_levels_2d_follows_nnunet_v2(median_shape, spacing, patch, kernels, strides):
    assert plan_levels_2d(median_shape, spacing) == (patch, kernels, strides)


def test_2d_configuration_for_acdc_is_nnunets():
    config = unet_config_for(acdc_like_plans(), configuration="2d", num_cases=140)
    assert config.configuration == "2d" and config.spatial_dims == 2
    assert config.patch_size == (1, 224, 256)  # one slice; in-plane from the median 216×256
    assert config.channels == (32, 64, 128, 256, 512, 512)  # doubling from 32, capped at 512 in 2-D
    assert config.kernel_sizes == (K1,) * 6  # 3×3 convolutions of single slices
    assert config.strides == (NONE,) + (IN_PLANE,) * 5
    assert config.deep_supervision and config.batch_dice
    assert config.supervised_heads == 3  # six levels: all but the lowest two are trained
    assert config.deep_supervision_weights() == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    # nnU-Net's rule: 85e6 / 18,063,360 elements × 12 = 56.5 -> 56; 5% of 140 × 9×216×256 voxels allows 61.
    assert feature_map_elements(config) == 18_063_360
    assert config.batch_size == 56
    # The 3-D configuration of the same plans is unchanged: the plans' patch, 320 channels, no deep supervision.
    config_3d = unet_config_for(acdc_like_plans())
    assert (config_3d.patch_size, config_3d.channels[-1], config_3d.supervised_heads) == ((4, 256, 256), 320, 0)
    assert config_3d.configuration == "3d_fullres" and config_3d.batch_size is None


@pytest.mark.parametrize(
    ("num_cases", "memory_gb", "batch"),
    [
        pytest.param(None, 8.0, 56, id="memory_rule"),
        pytest.param(10, 8.0, 4, id="five_percent_of_a_small_dataset"),  # 10 × 497,664 × 0.05 / 57,344 = 4.3
        pytest.param(1, 8.0, 2, id="never_below_two"),
        pytest.param(None, 2.0, 14, id="smaller_gpu"),
    ],
)
def test_nnunet_2d_batch_size(num_cases, memory_gb, batch):
    config = unet_config_for(acdc_like_plans(), configuration="2d")
    voxels = None if num_cases is None else 9 * 216 * 256 * num_cases
    assert nnunet_2d_batch_size(config, voxels, gpu_memory_gb=memory_gb) == batch


@pytest.mark.slow
def test_feature_map_elements_count_the_networks_convolution_outputs():
    config = tiny_config_2d(deep_supervision=False)
    network = UNet(config).eval()
    counted = []
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(lambda _, __, output: counted.append(output.numel()))
    with torch.no_grad():
        network(torch.randn(1, 1, *config.patch_size))
    assert feature_map_elements(config) == sum(counted)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"channels": (4, 8)}, id="levels_disagree"),
        pytest.param({"channels": (4, 8), "kernel_sizes": (K3, K3), "strides": (NONE, ALL)}, id="two_levels"),
        pytest.param({"strides": (IN_PLANE, IN_PLANE, IN_PLANE)}, id="first_stride_not_1"),
        pytest.param({"patch_size": (3, 16, 16), "strides": (NONE, ALL, IN_PLANE)}, id="patch_not_divisible"),
        pytest.param({"num_classes": 1}, id="one_class"),
        pytest.param({"configuration": "3d_lowres"}, id="unknown_configuration"),
        pytest.param({"configuration": "2d"}, id="2d_with_kernels_across_slices"),
        pytest.param({"batch_size": 0}, id="batch_0"),
    ],
)
def test_config_rejects_inconsistent_values(overrides):
    with pytest.raises(ConfigError, match="U-Net config"):
        tiny_config(**overrides)


def test_config_for_rejects_an_unknown_configuration():
    with pytest.raises(ConfigError, match="'3d_lowres' is unknown"):
        unet_config_for(acdc_like_plans(), configuration="3d_lowres")


@pytest.mark.parametrize("config", [tiny_config(batch_dice=False), tiny_config_2d(batch_size=12)], ids=["3d", "2d"])
def test_config_round_trips_through_json(config):
    assert UNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_written_before_2d_existed_reads_as_3d():
    fields_then = {"patch_size", "in_channels", "num_classes", "channels", "kernel_sizes", "strides", "batch_dice"}
    old = {key: value for key, value in tiny_config().to_dict().items() if key in fields_then}
    config = UNetConfig.from_dict(old)
    assert (config.configuration, config.deep_supervision, config.batch_size) == ("3d_fullres", False, None)
    with pytest.raises(ConfigError, match="unknown field"):
        UNetConfig.from_dict({**tiny_config().to_dict(), "depth": 3})


def test_2d_network_folds_slices_into_the_batch():
    torch.manual_seed(0)
    network = UNet(tiny_config_2d())
    image = torch.randn(2, 1, 3, 32, 32)  # three slices per patch: each is segmented on its own
    network.train()
    outputs = network(image)
    assert outputs.shape == (2, 2, 3, 3, 32, 32)  # (B, S, K, T, H, W): four levels train full resolution + 1 head
    outputs.sum().backward()
    network.eval()
    with torch.no_grad():
        logits = network(image)
        one_slice = network(image[:, :, 1:2])
    assert logits.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(logits[:, :, 1:2], one_slice)


def test_deep_supervision_loss_weights_each_output():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 3, 1, 8, 8, generator=generator)  # (B, S, K, T, H, W)
    label = torch.randint(0, 3, (2, 1, 8, 8), generator=generator)
    weights = (4 / 7, 2 / 7, 1 / 7)
    terms = DeepSupervisionLoss(DiceCrossEntropyLoss(), weights)(logits, label)
    for key in ("total", "dice", "cross_entropy"):
        expected = sum(w * DiceCrossEntropyLoss()(logits[:, s], label)[key] for s, w in enumerate(weights))
        torch.testing.assert_close(terms[key], expected)
    alone = DeepSupervisionLoss(DiceCrossEntropyLoss(), weights)(logits[:, 0], label)  # evaluation: final output
    torch.testing.assert_close(alone["total"], DiceCrossEntropyLoss()(logits[:, 0], label)["total"])


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
