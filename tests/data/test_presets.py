"""Data presets: the table, lookup by name and detection by dataset name."""

from __future__ import annotations

import pytest

from masksam.data.presets import DATA_PRESETS, detect_data_preset, get_data_preset
from masksam.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "patch", "queries"),
    [("acdc", (4, 256, 256), 8), ("synapse", (26, 256, 256), 24), ("amos", (9, 512, 512), 24)],
)
def test_paper_presets(name, patch, queries):
    preset = get_data_preset(name.upper())
    assert (preset.patch_size, preset.num_queries) == (patch, queries)
    assert DATA_PRESETS[name] is preset


@pytest.mark.parametrize(
    ("dataset_name", "expected"),
    [
        ("Dataset027_ACDC", "acdc"),
        ("ACDC", "acdc"),
        ("Dataset009_Synapse", "synapse"),
        ("AMOS22", "amos"),
        ("Dataset001_Liver", None),
    ],
)
def test_detect(dataset_name, expected):
    preset = detect_data_preset(dataset_name)
    assert (preset.name if preset else None) == expected


def test_unknown_preset():
    with pytest.raises(ConfigError, match="acdc, synapse, amos"):
        get_data_preset("brats")
