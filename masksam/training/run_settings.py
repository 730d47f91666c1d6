"""A training run's settings in one file: ``model`` (MaskSamConfig fields) and ``training`` (TrainingConfig fields).

``masksam train --config FILE`` reads such a file (YAML or JSON) holding only what differs from the defaults,
for example::

    model:
      num_queries: 12
      adapters: {depth_kernel: 5}
    training:
      epochs: 300
      learning_rate: 5.0e-4

Every new run writes its complete settings to ``fold_F/config.yaml``, so ``--config MODEL/fold_0/config.yaml``
repeats it. Precedence, lowest first: the built-in defaults, the preset and the plans, the file, the options given
on the command line.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from masksam.data.plans import Plans
from masksam.errors import ConfigError
from masksam.model.config import MaskSamConfig
from masksam.settings_file import read_settings, write_settings
from masksam.training.config import TrainingConfig

SECTIONS = ("model", "training")
RUN_SETTINGS_FILE = "config.yaml"


def read_run_settings(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``model`` and ``training`` sections of a run file (absent sections are empty).

    Raises:
        ConfigError: Unreadable file, another top-level key, or a section that is not a mapping.
    """
    data = read_settings(path, "the run settings")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(map(str, unknown))}; a run file has 'model' and 'training'"
        )
    sections = {name: data.get(name) or {} for name in SECTIONS}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: '{name}' must be a mapping of field names to values")
    return sections


def write_run_settings(path: str | Path, model: MaskSamConfig, training: TrainingConfig) -> None:
    """Writes the complete settings of a run (YAML or JSON by suffix), atomically."""
    write_settings(path, {"model": model.to_dict(), "training": training.to_dict()})


def override_model(config: MaskSamConfig, overrides: dict[str, Any], where: str) -> MaskSamConfig:
    """``config`` with ``overrides`` applied; nested sections (``adapters``, ``prompt_generator``) are merged.

    Raises:
        ConfigError: An unknown field or an invalid value, prefixed with ``where`` (the file or "command line").
    """
    merged = config.to_dict()
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    try:
        return MaskSamConfig.from_dict(merged)
    except (ConfigError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: model: {error}") from None


def override_training(config: TrainingConfig, overrides: dict[str, Any], where: str) -> TrainingConfig:
    """``config`` with ``overrides`` applied, each value checked against the field's type.

    Raises:
        ConfigError: An unknown field or a value of the wrong type or range, prefixed with ``where``.
    """
    defaults = {f.name: f.default for f in fields(TrainingConfig) if f.default is not MISSING}
    for name, value in overrides.items():
        expected = _expected_type(defaults.get(name))
        if expected is not None and value is not None and not _is_instance(value, expected):
            raise ConfigError(
                f"{where}: training.{name} must be {expected.__name__}, got {value!r} ({type(value).__name__})"
            )
    try:
        return TrainingConfig.from_dict({**config.to_dict(), **overrides})
    except (ConfigError, TypeError) as error:  # TypeError: e.g. a text where a number or None belongs
        raise ConfigError(f"{where}: training: {error}") from None


def check_fits_plans(config: MaskSamConfig, plans: Plans, where: str) -> None:
    """Raises a one-line ConfigError when the model's classes or channels differ from what the data was planned for."""
    planned = {"num_classes": plans.num_classes, "in_channels": plans.num_channels}
    for name, value in planned.items():
        if getattr(config, name) != value:
            raise ConfigError(
                f"{where}: model.{name} {getattr(config, name)!r} does not fit the plans ({value!r}: the data was "
                "preprocessed for it); remove it from the file"
            )


def _expected_type(default: Any) -> type | None:
    """The type a field's values must have, from its default (None: not checked here)."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float, str)):
        return type(default)
    return None


def _is_instance(value: Any, expected: type) -> bool:
    if expected is bool or isinstance(value, bool):
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)
