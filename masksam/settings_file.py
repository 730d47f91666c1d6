"""Settings files: one mapping in YAML (``.yaml``/``.yml``) or JSON (any other suffix).

Read with one-line errors that name the file; written through a temporary file and a rename, so a reader never
sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from masksam.errors import ConfigError
from masksam.files import replace_atomically

YAML_SUFFIXES = (".yaml", ".yml")


def read_settings(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping stored in ``path``.

    Args:
        path: A YAML or JSON file.
        what: What the file holds, for the error messages (e.g. "the model config").

    Raises:
        ConfigError: The file is missing, cannot be parsed, or does not hold a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in YAML_SUFFIXES else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read {what} ({_first_line(error)}); pass a JSON or YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of names to values")
    return data


def write_settings(path: str | Path, data: dict[str, Any]) -> None:
    """Writes ``data`` as YAML or JSON (by suffix), atomically.

    Raises:
        MaskSamError: The file could not be written (full disk, permissions); any previous file is unchanged.
    """
    path = Path(path)
    text = yaml.safe_dump(data, sort_keys=False) if path.suffix in YAML_SUFFIXES else json.dumps(data, indent=2)
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
