"""Run settings files: sections, merging, type checks, the plans' geometry, and `masksam train --config`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from masksam.cli.train_command import train
from masksam.data.plans import Plans
from masksam.errors import ConfigError
from masksam.model.config import preset_config
from masksam.training.checkpoint import read_checkpoint
from masksam.training.config import TrainingConfig
from masksam.training.run_settings import (
    check_fits_plans,
    override_model,
    override_training,
    read_run_settings,
    write_run_settings,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "optimiser: {lr: 1}\n", "unknown section(s) optimiser; a run file has 'model' and 'training'", id="section"
        ),
        pytest.param("training: [1, 2]\n", "'training' must be a mapping", id="not-a-mapping"),
        pytest.param("- 1\n", "the run settings must be a mapping", id="list"),
        pytest.param("model: {a: [1\n", "cannot read the run settings", id="broken-yaml"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "run.yaml", text)
    with pytest.raises(ConfigError) as caught:
        read_run_settings(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_and_absent_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the run settings"):
        read_run_settings(tmp_path / "missing.yaml")
    assert read_run_settings(write(tmp_path / "run.json", '{"model": {"num_queries": 5}}')) == {
        "model": {"num_queries": 5},
        "training": {},
    }


def test_model_overrides_merge_nested_sections() -> None:
    base = preset_config("acdc")
    changed = override_model(base, {"num_queries": 12, "adapters": {"depth_mlp_ratio": 2}}, "run.yaml")
    assert changed.num_queries == 12 and changed.adapters.depth_mlp_ratio == 2
    assert changed.adapters == replace(base.adapters, depth_mlp_ratio=2)  # the other adapter fields stay
    with pytest.raises(ConfigError, match=r"^run.yaml: model: config.adapters: unknown field.*depth_ratio"):
        override_model(base, {"adapters": {"depth_ratio": 2}}, "run.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"epochs": "ten"}, "training.epochs must be int, got 'ten' (str)", id="text-for-int"),
        pytest.param({"augment": 1}, "training.augment must be bool, got 1 (int)", id="int-for-bool"),
        pytest.param({"seed": True}, "training.seed must be int, got True (bool)", id="bool-for-int"),
        pytest.param({"optimizer": "adam"}, "optimizer 'adam' is unknown", id="unknown-optimizer"),
        pytest.param({"time_budget_minutes": "soon"}, "training:", id="text-for-optional-number"),
        pytest.param({"epoch": 3}, "unknown field(s) epoch", id="unknown-field"),
    ],
)
def test_training_overrides_are_checked(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        override_training(TrainingConfig(), overrides, "run.yaml")
    assert str(caught.value).startswith("run.yaml: ") and message in str(caught.value)


def test_training_overrides_accept_ints_for_floats() -> None:
    config = override_training(TrainingConfig(), {"learning_rate": 1, "time_budget_minutes": 30}, "run.yaml")
    assert config.learning_rate == 1 and config.time_budget_minutes == 30


def test_model_must_fit_the_plans(planned_dataset) -> None:
    _, plans_dir = planned_dataset
    plans = Plans.load(plans_dir)
    fitting = preset_config("tiny", num_classes=plans.num_classes, in_channels=plans.num_channels)
    fitting = replace(fitting, include_background=plans.include_background)
    check_fits_plans(fitting, plans, "run.yaml")
    with pytest.raises(ConfigError, match=r"run.yaml: model.num_classes 9 does not fit the plans \(3"):
        check_fits_plans(replace(fitting, num_classes=9), plans, "run.yaml")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_written_settings_read_back(tmp_path: Path, suffix: str) -> None:
    model, training = preset_config("acdc"), TrainingConfig(epochs=7, time_budget_minutes=3.5)
    path = tmp_path / f"config{suffix}"
    write_run_settings(path, model, training)
    sections = read_run_settings(path)
    assert override_model(preset_config("tiny"), sections["model"], str(path)) == model
    assert override_training(TrainingConfig(), sections["training"], str(path)) == training
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


@pytest.mark.slow  # trains through the CLI: 6-11 s on a shared machine
def test_train_takes_the_file_and_lets_given_options_win(planned_dataset, tmp_path: Path) -> None:
    raw, plans_dir = planned_dataset
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command()(train)
    settings = {
        "model": {"backbone": "tiny", "adapters": {"depth_mlp_ratio": 2}},
        "training": {"epochs": 1, "iterations_per_epoch": 1, "learning_rate": 5e-4, "num_workers": 0, "seed": 3},
    }
    run_file = write(tmp_path / "run.yaml", yaml.safe_dump(settings))
    common = [str(raw), "--plans", str(plans_dir), "--device", "cpu", "--val-patches", "1", "--no-final-validation"]
    result = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "a"), "--config", str(run_file), "--lr", "2e-4"])
    assert result.exit_code == 0, result.output
    fold = tmp_path / "a" / "fold_0"
    payload = read_checkpoint(fold / "checkpoint_final.pt")
    training = payload["training_config"]
    assert (training["epochs"], training["iterations_per_epoch"], training["seed"]) == (1, 1, 3)  # from the file
    assert training["learning_rate"] == 2e-4 and training["validation_patches"] == 1  # given options win
    assert payload["model_config"]["backbone"] == "tiny" and payload["model_config"]["adapters"]["depth_mlp_ratio"] == 2

    # The run's own config.yaml repeats it.
    again = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "b"), "--config", str(fold / "config.yaml")])
    assert again.exit_code == 0, again.output
    repeated = read_checkpoint(tmp_path / "b" / "fold_0" / "checkpoint_final.pt")
    assert repeated["model_config"] == payload["model_config"]
    assert repeated["training_config"] == training

    refused = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "a"), "--config", str(run_file), "--continue"])
    assert isinstance(refused.exception, ConfigError) and "--config starts a new run" in str(refused.exception)
