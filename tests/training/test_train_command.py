"""`masksam train` end to end on a small synthetic dataset: files, final validation, resume, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from masksam.training.checkpoint import read_checkpoint


def masksam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masksam", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_validate_and_continue(planned_dataset, tmp_path):
    raw, plans_dir = planned_dataset
    output = tmp_path / "model"
    common = ["--plans", str(plans_dir), "--backbone", "tiny", "--device", "cpu", "-j", "0", "--val-patches", "2"]
    first = masksam("train", str(raw), "-o", str(output), *common, "--epochs", "1", "--iters-per-epoch", "2")
    assert first.returncode == 0, first.stderr
    fold = output / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert "final validation Dice" in (fold / "training_log.txt").read_text()

    again = masksam("train", str(raw), "-o", str(output), *common)
    assert again.returncode == 1
    assert "already holds a training run; pass --continue" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    resumed = masksam("train", str(raw), "-o", str(output), *common, "--continue", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    payload = read_checkpoint(fold / "checkpoint_final.pt")
    assert payload["epoch"] == 2 and [r["epoch"] for r in payload["history"]] == [1, 2]


def test_train_refuses_a_backbone_without_weights(planned_dataset, tmp_path):
    raw, plans_dir = planned_dataset
    result = masksam(
        "train", str(raw), "-o", str(tmp_path / "m"), "--plans", str(plans_dir), "--backbone", "vit_b",
        "--checkpoint", str(tmp_path / "missing.pth"),
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"masksam: error: {tmp_path / 'missing.pth'}: backbone weights not found; check --checkpoint"
    )
