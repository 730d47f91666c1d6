"""Atomic writes (masksam/files.py and every writer built on a temporary file): whole files with the umask's mode.

``tempfile.mkstemp`` creates 0o600 files and ``mkdtemp`` 0o700 folders; renamed into place they would hide
checkpoints, predictions and datasets from the user's group. Each writer is checked under two umasks, so a
hard-coded 0o644 would fail the second.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from masksam.data.cache import save_npy_atomic, write_json_atomic
from masksam.data.io import write_volume
from masksam.data.phantoms import write_phantom_dataset
from masksam.errors import MaskSamError
from masksam.files import create_temporary_file, create_temporary_folder, default_file_mode, replace_atomically
from masksam.training.checkpoint import save_atomic
from masksam.training.progress import write_metrics_csv


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request: pytest.FixtureRequest):
    """Sets the process umask for one test and restores the previous one."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _replace_atomically(path: Path) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text("content"))


def _temporary_file(path: Path) -> None:
    fd, tmp = create_temporary_file(path)
    os.close(fd)
    os.replace(tmp, path)


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "replace_atomically": ("settings.yaml", _replace_atomically),
    "create_temporary_file": ("file.bin", _temporary_file),
    "write_json_atomic": ("case.json", lambda path: write_json_atomic({"a": 1}, path)),
    "save_npy_atomic": ("case.npy", lambda path: save_npy_atomic(np.zeros(3), path)),
    "write_metrics_csv": ("metrics.csv", lambda path: write_metrics_csv([{"epoch": 1, "loss": 0.5}], path)),
    "save_atomic": ("checkpoint_latest.pt", lambda path: save_atomic({"weights": torch.zeros(2)}, path)),
    "write_volume": ("case.nii.gz", lambda path: write_volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), path)),
}


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_written_files_get_the_umask_mode(tmp_path: Path, umask: int, writer: str) -> None:
    name, write = WRITERS[writer]
    path = tmp_path / "out" / name
    path.parent.mkdir()
    write(path)
    assert mode(path) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary file left


def test_a_rewrite_gets_the_umask_mode_too(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "checkpoint_latest.pt"
    save_atomic({"epoch": 1}, path)
    path.chmod(0o600)
    save_atomic({"epoch": 2}, path)
    assert mode(path) == 0o666 & ~umask


def test_umask_022_gives_0644(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        assert default_file_mode() == 0o644
        _replace_atomically(tmp_path / "a.txt")
        assert mode(tmp_path / "a.txt") == 0o644
    finally:
        os.umask(previous)


def test_phantom_dataset_folders_and_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    root = write_phantom_dataset(tmp_path / "phantoms", num_train=1, num_test=0, shape=(16, 16, 2), seed=0)
    assert mode(root) == 0o777 & ~umask
    assert mode(root / "imagesTr") == 0o777 & ~umask
    assert mode(root / "dataset.json") == 0o666 & ~umask
    assert mode(root / "imagesTr" / "phantom_000_0000.nii.gz") == 0o666 & ~umask


def test_temporary_folder_is_beside_the_target(tmp_path: Path, umask: int) -> None:
    folder = create_temporary_folder(tmp_path / "dataset")
    assert folder.parent == tmp_path and folder.name.startswith(".dataset.")
    assert mode(folder) == 0o777 & ~umask


def test_temporary_names_never_collide(tmp_path: Path) -> None:
    names = set()
    for _ in range(200):
        fd, tmp = create_temporary_file(tmp_path / "x.pt")
        os.close(fd)
        names.add(tmp)
    assert len(names) == 200 and all(Path(n).name.startswith(".x.pt.") and n.endswith(".tmp") for n in names)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("old")

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(MaskSamError, match="summary.json: could not write"):
        replace_atomically(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
