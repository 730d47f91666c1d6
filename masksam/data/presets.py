"""Data-side presets: patch size and query count that a named setting fixes (paper §3).

The model presets in ``masksam/model/config.py`` use the same names; this table is only what planning
needs. Presets are data: add a row, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass

from masksam.errors import ConfigError


@dataclass(frozen=True)
class DataPreset:
    """Patch geometry fixed by a preset.

    Attributes:
        name: Preset key, shared with the model presets.
        patch_size: (T, H, W): slices along the through-plane axis, then in-plane rows and columns.
        num_queries: N, queries (segments) per slice.
        dataset_keywords: Lower-case substrings of a dataset name that select this preset automatically.
    """

    name: str
    patch_size: tuple[int, int, int]
    num_queries: int
    dataset_keywords: tuple[str, ...] = ()


DATA_PRESETS: dict[str, DataPreset] = {
    "acdc": DataPreset("acdc", (4, 256, 256), 8, ("acdc",)),
    "synapse": DataPreset("synapse", (26, 256, 256), 24, ("synapse", "btcv")),
    "amos": DataPreset("amos", (9, 512, 512), 24, ("amos",)),
}


def get_data_preset(name: str) -> DataPreset:
    """Looks a preset up by name.

    Args:
        name: One of ``DATA_PRESETS``.

    Returns:
        The preset.

    Raises:
        ConfigError: Unknown name.
    """
    try:
        return DATA_PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown data preset '{name}'; choose one of {', '.join(DATA_PRESETS)} or 'none'") from None


def detect_data_preset(dataset_name: str) -> DataPreset | None:
    """Returns the preset whose keyword occurs in ``dataset_name`` (case-insensitive), if any."""
    lowered = dataset_name.lower()
    for preset in DATA_PRESETS.values():
        if any(keyword in lowered for keyword in preset.dataset_keywords):
            return preset
    return None
