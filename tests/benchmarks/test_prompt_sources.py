"""benchmarks/prompt_sources.py runs on a trained class-slot checkpoint and prints one row per box source."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from data.dataset_builders import planned_synthetic_dataset

from masksam.data.plans import Plans
from masksam.training.config import TrainingConfig
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("cases", ["val", "train"])
def test_every_box_source_is_scored_on_the_chosen_cases(tmp_path: Path, cases: str) -> None:
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
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    where = "validation" if cases == "val" else "training"
    assert f"2 patches of fold 0's {where} cases, 1 refinement pass(es)" in result.stdout
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
