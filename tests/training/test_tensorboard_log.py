"""TensorBoard logging of epoch records: tags, values per epoch, and a one-line error without the package."""

from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from training.test_trainer import FAST, make_trainer

from masksam.errors import ConfigError
from masksam.training.tensorboard_log import TensorBoardLog, scalar_tag


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("train_loss", "loss/train"),
        ("val_loss", "loss/validation"),
        ("loss_dice", "train_loss_terms/dice"),
        ("dice_LV", "pseudo_dice/LV"),
        ("mean_dice_ema", "pseudo_dice/mean_ema"),
        ("lr", "optimiser/lr"),
        ("something_new", "other/something_new"),
    ],
)
def test_scalar_tag(key: str, tag: str) -> None:
    assert scalar_tag(key) == tag


def test_numbers_of_each_record_become_scalars_at_their_epoch(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    log = TensorBoardLog(tmp_path / "tb")
    log.write({"epoch": 1, "train_loss": 2.5, "dice_RV": float("nan"), "note": "text"})
    log.write({"epoch": 2, "train_loss": 1.5, "dice_RV": 0.25})
    log.close()
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"loss/train", "pseudo_dice/RV"}  # NaN and text are left out
    assert scalars["loss/train"] == [(1, 2.5), (2, 1.5)]
    assert scalars["pseudo_dice/RV"] == [(2, 0.25)]


def test_missing_package_is_a_one_line_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    with pytest.raises(ConfigError, match=r"pip install 'masksam\[tensorboard\]'"):
        TensorBoardLog(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_trainer_logs_every_epoch_to_tensorboard(planned_dataset, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    trainer = make_trainer(planned_dataset, tmp_path / "model", replace(FAST, tensorboard=True))
    trainer.fit()
    fold = tmp_path / "model" / "fold_0"
    scalars = read_scalars(fold / "tensorboard")
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    assert [step for step, _ in scalars["loss/train"]] == [1, 2]
    for (_, value), row in zip(scalars["loss/train"], rows, strict=True):
        assert value == pytest.approx(float(row["train_loss"]))
    assert {"loss/validation", "pseudo_dice/mean", "optimiser/lr", "train_loss_terms/classification"} <= set(scalars)
    assert "tensorboard --logdir" in (fold / "training_log.txt").read_text()
