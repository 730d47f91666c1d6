"""Optimiser groups (what prompts vs what sits inside SAM) and the warm-up of the poly schedule."""

from __future__ import annotations

import pytest
import torch

from masksam.model.config import preset_config
from masksam.model.masksam import build_masksam
from masksam.training.config import TrainingConfig
from masksam.training.optim import PolyLR, build_optimizer, parameter_groups, poly_factor


def test_groups_split_prompting_parts_from_adapters_inside_sam() -> None:
    model = build_masksam(preset_config("tiny", train_backbone=False))
    config = TrainingConfig(learning_rate=1e-3, adapter_lr_scale=0.25)
    groups = {group["name"]: group for group in parameter_groups(model, config)}
    names = {id(p): name for name, p in model.named_parameters()}
    inside = {names[id(p)] for p in groups["inside_sam"]["params"]}
    beside = {names[id(p)] for p in groups["prompting"]["params"]}
    assert groups["prompting"]["lr"] == 1e-3 and groups["inside_sam"]["lr"] == pytest.approx(2.5e-4)
    assert any(".attention_adapters." in name for name in inside)
    assert any(name.startswith("mask_decoder.mlp_adapters.") for name in inside)
    assert {"mask_decoder.class_head.weight", "mask_decoder.global_classifier_tokens.weight"} <= beside
    assert any(name.startswith("prompt_generator.") for name in beside)
    assert "mask_prompt_gate.gate" in beside
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert inside | beside == trainable and not inside & beside


def test_warm_up_rises_linearly_then_decays() -> None:
    assert poly_factor(0, 100, 0.9, warmup_steps=10) == pytest.approx(0.1)
    assert poly_factor(4, 100, 0.9, warmup_steps=10) == pytest.approx(0.5 * (1 - 4 / 100) ** 0.9)
    assert poly_factor(20, 100, 0.9, warmup_steps=10) == pytest.approx((1 - 20 / 100) ** 0.9)
    assert poly_factor(5, 100, 0.9) == pytest.approx((1 - 5 / 100) ** 0.9)


def test_scheduler_applies_the_factor_to_every_group() -> None:
    model = build_masksam(preset_config("tiny"))
    config = TrainingConfig(learning_rate=1e-2, adapter_lr_scale=0.5, warmup_steps=4)
    optimizer = build_optimizer(parameter_groups(model, config), config)
    scheduler = PolyLR(optimizer, total_steps=100, exponent=1.0, warmup_steps=4)
    first = [group["lr"] for group in optimizer.param_groups]
    assert first == pytest.approx([1e-2 / 4, 0.5e-2 / 4])
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-2 * 0.9, 0.5e-2 * 0.9])
    torch.testing.assert_close(torch.tensor(scheduler.get_last_lr()), torch.tensor([9e-3, 4.5e-3]))
