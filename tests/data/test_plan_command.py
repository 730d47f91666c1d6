"""`masksam plan` on the command line: success output, every problem listed then one error line, datasets by
nnU-Net ID, and the plans folder that ``train`` then finds and reuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_builders import make_dataset

from masksam import cli  # the package's own CLI: an import error must fail these tests, not skip them
from masksam.data.plans import Plans


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["masksam", "plan", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
        raise SystemExit(0)
    return stop.value.code


def test_plan_success(dataset, tmp_path, monkeypatch, capsys):
    assert _run(monkeypatch, dataset, "-o", tmp_path / "out", "-j", "0") == 0
    out = capsys.readouterr().out
    assert "plans.json" in out and "3 written" in out
    assert (tmp_path / "out" / Plans.load(tmp_path / "out").preprocessed_folder).is_dir()


def test_plan_lists_every_problem(tmp_path, monkeypatch, capsys):
    root = make_dataset(tmp_path / "ds")
    (root / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"")
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    assert _run(monkeypatch, root, "-o", tmp_path / "out", "-j", "0") == 1
    err = capsys.readouterr().err
    assert "case case_000" in err and "file is empty" in err
    assert "case case_002" in err and "label file missing" in err
    assert err.strip().splitlines()[-1].startswith("masksam: error: dataset")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["-d", "1"], ["1"], ["Dataset001"]], ids=["-d", "positional_id", "name"])
def test_plan_finds_a_dataset_by_its_id_under_nnunet_raw(dataset, tmp_path, monkeypatch, capsys, args) -> None:
    monkeypatch.setenv("nnUNet_raw", str(dataset.parent))  # the fixture's folder is Dataset001_Synthetic
    monkeypatch.setenv("MASKSAM_PREPROCESSED", str(tmp_path / "preprocessed"))
    assert _run(monkeypatch, *args, "-j", "0", "--no-preprocess") == 0
    assert (tmp_path / "preprocessed" / "Dataset001_Synthetic" / "plans.json").is_file()


def test_an_id_without_nnunet_raw_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _run(monkeypatch, "-d", "27") == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "masksam: error: 27: no such folder, and nnUNet_raw is not set to look the dataset up; export "
        "nnUNet_raw=/path/to/nnUNet_raw or give the dataset folder"
    )
    assert not (tmp_path / "masksam_preprocessed").exists()


@pytest.mark.slow
def test_train_after_plan_reuses_its_cache(dataset, tmp_path, monkeypatch, capsys) -> None:
    shared = tmp_path / "preprocessed"
    monkeypatch.setenv("MASKSAM_PREPROCESSED", str(shared))
    assert _run(monkeypatch, dataset, "-j", "0") == 0
    plans_dir = shared / dataset.name
    cache = plans_dir / Plans.load(plans_dir).preprocessed_folder
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in cache.iterdir()}

    output, missing = tmp_path / "runs" / "a", tmp_path / "missing.pth"
    command = ["train", str(dataset), "-o", str(output), "--backbone", "vit_b", "--checkpoint", str(missing), "-j", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "masksam", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Stopped after the data step (at the missing weights): it neither planned nor preprocessed again.
    assert result.returncode == 1 and "backbone weights not found" in result.stderr, result.stderr
    assert "planning" not in result.stdout and "preprocessed" not in result.stdout, result.stdout
    assert not (output / "plans").exists()
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in cache.iterdir()} == before
    assert Path(plans_dir / "plans.json").is_file()
