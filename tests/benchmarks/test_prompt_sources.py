"""benchmarks/prompt_sources.py runs on a trained class-slot checkpoint and prints one row per box source."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from data.dataset_builders import planned_synthetic_dataset

from masksam.data.plans import Plans
from masksam.model.config import preset_config
from masksam.model.masksam import build_masksam
from masksam.training.config import TrainingConfig
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def load_prompt_sources():
    spec = importlib.util.spec_from_file_location("prompt_sources", REPO / "benchmarks" / "prompt_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backbone", ["tiny", "lite_medsam"])
def test_silenced_encoder_adapters_give_the_features_of_untrained_ones(backbone: str) -> None:
    prompt_sources = load_prompt_sources()
    torch.manual_seed(0)
    image_size = 64 if backbone == "tiny" else 128  # the smallest size each backbone supports
    config = replace(preset_config("tiny"), backbone=backbone, image_size=image_size, patch_size=(2, 64, 64))
    untrained = build_masksam(config).image_encoder.eval()
    trained = build_masksam(config).image_encoder.eval()
    trained.load_state_dict(untrained.state_dict())
    with torch.no_grad():
        for name, parameter in trained.named_parameters():
            if "adapters" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)  # as after training: every adapter adds something
    slices = torch.rand(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        before = untrained(slices).embedding
        assert not torch.allclose(trained(slices).embedding, before)
        count = prompt_sources.silence_encoder_adapters(trained)
        after = trained(slices).embedding
    assert count == len(untrained.attention_adapters) + len(untrained.mlp_adapters) > 0
    torch.testing.assert_close(after, before)


@pytest.mark.slow
@pytest.mark.parametrize(("cases", "silenced"), [("val", False), ("train", False), ("train", True)])
def test_every_box_source_is_scored_on_the_chosen_cases(tmp_path: Path, cases: str, silenced: bool) -> None:
    _, plans_dir = planned_synthetic_dataset(tmp_path / "data")
    plans = Plans.load(plans_dir)
    model_config = replace(model_config_for(plans, backbone="tiny", queries="class_slots"), patch_size=(2, 64, 64))
    training = TrainingConfig(
        epochs=1, iterations_per_epoch=1, validation_patches=0, num_workers=0, final_validation=False
    )
    Trainer(
        model_config=model_config,
        training_config=training,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=tmp_path / "model",
        backbone_checkpoint=None,
        show_progress=False,
    ).fit()
    command = [sys.executable, str(REPO / "benchmarks" / "prompt_sources.py")]
    command += [str(tmp_path / "model" / "fold_0" / "checkpoint_final.pt"), "--plans", str(plans_dir)]
    command += ["--patches", "2", "--threads", "1", "--cases", cases, "--refine", "1"]
    command += ["--without-encoder-adapters"] if silenced else []
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    where = "validation" if cases == "val" else "training"
    assert f"2 patches of fold 0's {where} cases, 1 refinement pass(es)" in result.stdout
    assert ("adapters silenced" in result.stdout) == silenced
    sources = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert sources[1:] == [  # after the header row
        "model",
        "learned",
        "mask_all",
        "mask_largest",
        "mask_largest_tight",
        "average_largest",
        "ground_truth",
        "aux_masks",
    ]
