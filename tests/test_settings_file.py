"""Settings files: YAML or JSON by suffix, one-line read errors, atomic writes that keep the old file on failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from masksam.errors import ConfigError, MaskSamError
from masksam.settings_file import read_settings, write_settings


@pytest.mark.parametrize("name", ["settings.yaml", "settings.yml", "settings.json"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    data = {"model": {"patch_size": [4, 256, 256], "adapters": {"kind": "dconv"}}, "training": {"lr": 0.001}}
    write_settings(tmp_path / name, data)
    assert read_settings(tmp_path / name, "the settings") == data
    text = (tmp_path / name).read_text()
    assert text.lstrip().startswith("{") == name.endswith(".json")


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.yaml"
    write_settings(path, {"a": 1})

    def full_disk(*_args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(MaskSamError) as caught:
        write_settings(path, {"a": 2})
    assert str(caught.value) == f"{path}: could not write (No space left on device); check space and permissions"
    assert read_settings(path, "the settings") == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("bad.json", "{not json", "cannot read the settings (Expecting property name", id="json"),
        pytest.param("bad.yaml", "a: [1", "cannot read the settings (while parsing", id="yaml"),
        pytest.param("list.yaml", "- 1\n", "the settings must be a mapping of names to values", id="not-a-mapping"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_settings(tmp_path / name, "the settings")
    assert str(caught.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(caught.value)
