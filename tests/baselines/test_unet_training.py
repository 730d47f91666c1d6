"""U-Net trainer: MaskSAM's loop and files, overfitting one batch (3-D and 2-D), exact resume, refusing to overwrite."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from masksam.baselines.unet import UNetConfig, unet_config_for
from masksam.baselines.unet_checkpoint import load_unet, read_unet_file
from masksam.baselines.unet_training import UNetTrainer, train_unet
from masksam.data.plans import Plans
from masksam.errors import ConfigError
from masksam.threads import ThreadChoice
from masksam.training.config import TrainingConfig


@pytest.fixture(autouse=True)
def trainer_on_one_thread(monkeypatch):
    # The Trainer measures whether every core beats one; tests stay on one.
    monkeypatch.setattr("masksam.training.trainer.choose_threads", lambda requested: ThreadChoice(1, {}))


def tiny_unet(plans_dir: Path) -> UNetConfig:
    """A few channels on 2×32×32 patches (the plans' 8×64×64 would take a quarter second per step)."""
    config = unet_config_for(Plans.load(plans_dir), base_channels=8, max_channels=16, max_levels=3)
    return replace(config, patch_size=(2, 32, 32))


@pytest.mark.slow  # full fit() runs: 4-12 s each here
def test_train_unet_writes_the_model_file_and_masksam_logs(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    model_file = train_unet(
        plans_dir,
        tmp_path / "model",
        epochs=2,
        iterations_per_epoch=2,
        validation_patches=2,
        num_workers=0,
        unet_config=tiny_unet(plans_dir),
    )
    fold = tmp_path / "model" / "fold_0"
    assert model_file == fold / "checkpoint_final.pt"
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt", "progress.png"):
        assert (fold / name).stat().st_size > 0, name
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    columns = {"train_loss", "loss_dice", "loss_cross_entropy", "val_loss", "dice_class1", "dice_class2", "lr"}
    assert columns <= set(rows[0])
    assert "dice_background" not in rows[0]
    assert float(rows[1]["lr"]) < float(rows[0]["lr"]) == pytest.approx(1e-3 * (1 - 2 / 4) ** 0.9, rel=1e-4)
    log = (fold / "training_log.txt").read_text()
    assert "training the U-Net baseline" in log and "epoch 2/2" in log
    assert "optimizer" in read_unet_file(fold / "checkpoint_latest.pt")  # resumable
    assert "optimizer" not in read_unet_file(model_file)  # weights only: a third of the size with AdamW
    trained = load_unet(model_file)
    assert trained.model.config == tiny_unet(plans_dir)
    assert trained.plans == Plans.load(plans_dir)


@pytest.mark.slow  # full fit() runs: 4-12 s each here
def test_loss_falls_when_overfitting_one_batch(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    # A long schedule keeps the poly learning rate near 1e-2 over the 40 steps taken here.
    config = TrainingConfig(
        epochs=1, iterations_per_epoch=10_000, num_workers=0, learning_rate=1e-2, augment=False, warmup_steps=0
    )
    trainer = UNetTrainer(
        unet_config=tiny_unet(plans_dir),
        training_config=config,
        plans=Plans.load(plans_dir),
        plans_dir=plans_dir,
        output_dir=tmp_path,
        show_progress=False,
    )
    image, label = next(iter(trainer.build_loader(0)))  # (2, 1, 2, 32, 32), (2, 2, 32, 32)
    assert label.unique().tolist() == [0, 1, 2]
    losses = [trainer.train_step(image, label)["total"] for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], [round(v, 3) for v in losses]
    trainer.model.eval()
    with torch.no_grad():
        predicted = trainer.model(image).argmax(dim=1)
    assert (predicted == label).double().mean() > 0.95


def tiny_unet_2d(plans_dir: Path) -> UNetConfig:
    """nnU-Net's 2-D plan of the synthetic cases (one 40×40 slice, four levels) with a few channels."""
    return unet_config_for(Plans.load(plans_dir), configuration="2d", num_cases=6, base_channels=4, max_channels=8)


def test_2d_configuration_learns_in_a_few_sgd_steps(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    unet_config = tiny_unet_2d(plans_dir)
    assert (unet_config.patch_size, unet_config.supervised_heads) == ((1, 40, 40), 1)
    config = TrainingConfig(
        epochs=1, iterations_per_epoch=10_000, num_workers=0, optimizer="sgd", learning_rate=1e-2, augment=False
    )  # nnU-Net's optimiser: SGD, Nesterov momentum 0.99
    trainer = UNetTrainer(
        unet_config=unet_config,
        training_config=config,
        plans=Plans.load(plans_dir),
        plans_dir=plans_dir,
        output_dir=tmp_path,
        show_progress=False,
    )
    batches = iter(trainer.build_loader(0))
    image, label = next(batches)  # (2, 1, 1, 40, 40), (2, 1, 40, 40): single slices
    assert image.shape == (2, 1, 1, 40, 40) and label.shape == (2, 1, 40, 40)
    losses = [trainer.train_step(*next(batches))["total"] for _ in range(30)]  # a new batch every step
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), [round(v, 3) for v in losses]  # measured: 0.58


@pytest.mark.slow  # full fit() runs: 4-12 s each here
def test_train_unet_2d_plans_nnunets_configuration(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    model_file = train_unet(
        plans_dir,
        tmp_path / "model",
        configuration="2d",
        optimizer="sgd",
        epochs=1,
        iterations_per_epoch=2,
        validation_patches=2,
        num_workers=0,
    )
    expected = unet_config_for(Plans.load(plans_dir), configuration="2d", num_cases=6)  # all cases of the split
    assert load_unet(model_file).model.config == expected
    assert expected.batch_size == 2  # 5% of six 8×40×36 cases is two 40×40 slices
    log = (tmp_path / "model" / "fold_0" / "training_log.txt").read_text()
    assert "training the U-Net baseline (2d," in log and "patch 1×40×40, batch 2" in log and "sgd lr 0.01" in log


@pytest.mark.slow  # full fit() runs: 4-12 s each here
def test_resume_continues_exactly(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    settings = dict(
        epochs=2, iterations_per_epoch=2, validation_patches=2, num_workers=0, unet_config=tiny_unet(plans_dir)
    )
    straight = read_unet_file(train_unet(plans_dir, tmp_path / "straight", **settings))

    # As train_unet configures it: AdamW at 1e-3, no warm-up (nnU-Net's schedule).
    config = TrainingConfig(
        epochs=2, iterations_per_epoch=2, validation_patches=2, num_workers=0, learning_rate=1e-3, warmup_steps=0
    )
    plans = Plans.load(plans_dir)
    first = UNetTrainer(
        unet_config=tiny_unet(plans_dir),
        training_config=config,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=tmp_path / "split",
        show_progress=False,
    )
    first.fit(stop_after_epochs=1)
    resumed = read_unet_file(train_unet(plans_dir, tmp_path / "split", resume=True, num_workers=0))
    assert resumed["epoch"] == straight["epoch"] == 2
    for key, value in straight["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, rtol=0, atol=0, msg=key)
    drop = {"epoch_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed["history"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in straight["history"]
    ]


def test_refuses_to_overwrite_a_run(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    settings = dict(epochs=1, iterations_per_epoch=1, validation_patches=0, num_workers=0)
    train_unet(plans_dir, tmp_path, unet_config=tiny_unet(plans_dir), **settings)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train_unet(plans_dir, tmp_path, unet_config=tiny_unet(plans_dir), **settings)
