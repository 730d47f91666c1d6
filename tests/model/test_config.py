"""Model configuration: presets, JSON/YAML round trips, and one-line errors for bad values."""

from __future__ import annotations

import pytest

from masksam.errors import ConfigError
from masksam.model.config import PRESETS, MaskSamConfig, PromptGeneratorConfig, preset_config


@pytest.mark.parametrize(
    ("preset", "backbone", "patch", "queries", "image_size"),
    [
        ("acdc", "lite_medsam", (4, 256, 256), 8, 256),
        ("synapse", "vit_b", (26, 256, 256), 24, 256),
        ("amos", "vit_b", (9, 512, 512), 24, 512),
        ("amos", "lite_medsam", (9, 512, 512), 24, 256),
    ],
)
def test_presets(preset: str, backbone: str, patch, queries: int, image_size: int) -> None:
    config = preset_config(preset, backbone=backbone)
    assert (config.patch_size, config.num_queries, config.image_size) == (patch, queries, image_size)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_round_trip(tmp_path, preset: str, suffix: str) -> None:
    config = preset_config(preset)
    path = tmp_path / f"config{suffix}"
    config.save(path)
    assert MaskSamConfig.load(path) == config


def test_unknown_fields_and_presets_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown field.*num_querys"):
        MaskSamConfig.from_dict({"num_querys": 3})
    with pytest.raises(ConfigError, match=r"config\.adapters: unknown field.*kind"):
        MaskSamConfig.from_dict({"adapters": {"kind": "x"}})
    with pytest.raises(ConfigError, match="unknown preset 'brats'"):
        preset_config("brats")


def test_unreadable_config_file(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the model config"):
        MaskSamConfig.load(path)


@pytest.mark.parametrize("margin", [-0.01, 0.5])
def test_box_margin_outside_its_range_is_refused(margin: float) -> None:
    with pytest.raises(ConfigError, match=rf"box_margin {margin} must be in \[0, 0.5\)"):
        MaskSamConfig.from_dict({"prompt_generator": {"box_margin": margin}})


def test_a_config_saved_before_box_margin_loads_with_the_default() -> None:
    config = MaskSamConfig.from_dict({"prompt_generator": {"variant": "mask"}})
    assert config.prompt_generator.box_margin == PromptGeneratorConfig().box_margin == 0.01
