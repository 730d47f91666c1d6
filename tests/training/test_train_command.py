"""`masksam train` end to end on a small synthetic dataset: files, final validation, resume, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
import typer

from masksam.cli.train_command import PLANNING_MARKER, parse_fold, prepare_before_joining, what_complete_run_does
from masksam.training.checkpoint import read_checkpoint

MASKSAM = shutil.which("masksam")
needs_script = pytest.mark.skipif(MASKSAM is None, reason="the masksam console script is not installed")
# One thread per child process; a wide terminal so help lines are not wrapped.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}


def masksam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masksam", *args], capture_output=True, text=True, timeout=600)


def installed_masksam(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as the user runs it."""
    return subprocess.run([MASKSAM, *args], capture_output=True, text=True, timeout=300, env=ENV)


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

    (fold / "validation" / "summary.json").unlink()  # as if the final validation had been cut short
    validated = masksam("train", str(raw), "-o", str(output), *common, "--continue")
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.splitlines()[0] == what_complete_run_does(fold, 1, True, output)
    assert (fold / "validation" / "summary.json").is_file()
    assert read_checkpoint(fold / "checkpoint_final.pt")["epoch"] == 1  # no epoch trained

    resumed = masksam("train", str(raw), "-o", str(output), *common, "--continue", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    payload = read_checkpoint(fold / "checkpoint_final.pt")
    assert payload["epoch"] == 2 and [r["epoch"] for r in payload["history"]] == [1, 2]


@pytest.mark.slow
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


@pytest.mark.parametrize(
    ("text", "fold"), [("0", 0), ("3", 3), ("-1", -1), ("all", -1), ("ALL", -1)], ids=["0", "3", "-1", "all", "ALL"]
)
def test_fold_all_is_minus_one(text: str, fold: int) -> None:
    assert parse_fold(text) == fold


@pytest.mark.parametrize("text", ["seven", "-2", "0,1"])
def test_other_folds_are_usage_errors(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_fold(text)


@needs_script
def test_help_shows_the_tensorboard_extra_and_fold_all() -> None:
    result = installed_masksam("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "pip install 'masksam[tensorboard]'" in result.stdout  # rich took [tensorboard] for markup
    assert "all (same as -1" in result.stdout


@needs_script
@pytest.mark.slow
def test_a_refused_fold_leaves_no_fold_folder(planned_dataset, tmp_path) -> None:
    raw, plans_dir = planned_dataset
    output = tmp_path / "model"
    result = installed_masksam(
        "train", str(raw), "-o", str(output), "--plans", str(plans_dir), "--backbone", "tiny", "--fold", "7"
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"masksam: error: {plans_dir / 'splits_final.json'}: fold 7 does not exist; choose 0..2 or -1 for all cases"
    )
    assert not (output / "fold_7").exists()


@needs_script
@pytest.mark.slow  # about 15 s: one epoch, then the script again
def test_fold_all_trains_every_case_and_continue_says_the_run_was_complete(planned_dataset, tmp_path) -> None:
    raw, plans_dir = planned_dataset
    output = tmp_path / "model"
    common = ["--plans", str(plans_dir), "--backbone", "tiny", "--device", "cpu", "-j", "0", "--fold", "all"]
    first = installed_masksam(
        "train", str(raw), "-o", str(output), *common, "--epochs", "1", "--iters-per-epoch", "1", "--batch-size", "1"
    )
    assert first.returncode == 0, first.stderr
    fold = output / "fold_all"
    payload = read_checkpoint(fold / "checkpoint_final.pt")
    assert payload["training_config"]["fold"] == -1 and payload["epoch"] == 1
    modified = (fold / "checkpoint_final.pt").stat().st_mtime_ns

    again = installed_masksam("train", str(raw), "-o", str(output), *common, "--continue")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == what_complete_run_does(fold, 1, False, output)
    assert "training was complete" in again.stdout and "nothing to resume" in again.stdout
    assert (fold / "checkpoint_final.pt").stat().st_mtime_ns == modified  # nothing trained or written again


def test_a_complete_run_whose_validation_was_cut_short_runs_only_the_validation(tmp_path) -> None:
    line = what_complete_run_does(tmp_path / "fold_0", 5, True, tmp_path)
    assert line == (
        f"training was complete: {tmp_path / 'fold_0'} trained all 5 epochs (checkpoint_final.pt); running the "
        "final validation, which had not finished"
    )


@pytest.fixture
def no_collectives(monkeypatch):
    """Planning happens before the process group exists: any collective would be a mistake."""
    import torch.distributed as dist

    def refused(*args, **kwargs):
        raise AssertionError("a collective while planning: ranks would wait under the NCCL timeout")

    monkeypatch.setattr(dist, "barrier", refused)
    monkeypatch.setattr(dist, "init_process_group", refused)


def test_other_ranks_wait_for_rank_0s_plans_without_a_collective(tmp_path, no_collectives) -> None:
    """plans.json is written before the cache is filled: a rank waits until rank 0's marker is gone too."""
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    (plans_dir / PLANNING_MARKER).touch()
    (plans_dir / "plans.json").write_text("{}")
    finished = threading.Timer(0.3, (plans_dir / PLANNING_MARKER).unlink)
    finished.start()
    prepare_before_joining(tmp_path / "raw", plans_dir, rank=1, poll_seconds=0.02)
    finished.join()
    assert not (plans_dir / PLANNING_MARKER).exists()


@pytest.mark.parametrize(
    ("planned", "marker"),
    [
        pytest.param(False, False, id="no-plans"),
        pytest.param(True, True, id="interrupted-planning"),
        pytest.param(True, False, id="planned"),
    ],
)
def test_rank_0_prepares_with_the_folder_marked(tmp_path, no_collectives, monkeypatch, capsys, planned, marker) -> None:
    """Rank 0 plans when there are no plans, and checks (or fills) the cache in every case, marked while it works."""
    plans_dir = tmp_path / "plans"
    if planned:
        plans_dir.mkdir()
        (plans_dir / "plans.json").write_text("{}")
    if marker:
        (plans_dir / PLANNING_MARKER).touch()
    calls = []

    def prepare_for_training(dataset_dir, folder, **kwargs):
        assert (folder / PLANNING_MARKER).exists()  # marked while it works
        calls.append(folder)
        return SimpleNamespace(action="reused", describe=lambda: "")

    monkeypatch.setattr("masksam.data.pipeline.prepare_for_training", prepare_for_training)
    prepare_before_joining(tmp_path / "raw", plans_dir, rank=0)
    assert calls == [plans_dir]
    assert ("planning" in capsys.readouterr().out) == (not planned)
    assert not (plans_dir / PLANNING_MARKER).exists()
