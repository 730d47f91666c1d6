"""`masksam plan` on the command line: success output, and every problem listed then one error line."""

from __future__ import annotations

import sys

import pytest
from dataset_builders import make_dataset

from masksam import cli  # the package's own CLI: an import error must fail these tests, not skip them


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
    assert (tmp_path / "out" / "preprocessed").is_dir()


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
