"""From command-line choices to a model config and a backbone weights file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from masksam.backbones.sam import backbone_spec
from masksam.backbones.weights import WEIGHTS, find_cached_weights
from masksam.data.plans import Plans
from masksam.errors import ConfigError
from masksam.model.config import PRESETS, MaskSamConfig, preset_config

# LiteMedSAM's input side by default: 128 costs a quarter of 256 per slice (DESIGN §10 "cheaper steps").
CPU_LITE_MEDSAM_SIZE = 128


def model_config_for(
    plans: Plans,
    *,
    backbone: str,
    preset: str | None = None,
    prompt_mode: str = "generated",
    train_backbone: bool | None = None,
    queries: str = "class_slots",
    image_size: int | None = None,
    prompt_variant: str = "mask",
) -> MaskSamConfig:
    """The model for a planned dataset: adapter/prompt-generator settings from a preset, geometry from the plans.

    The preset is ``preset`` if given, else ``tiny`` for the tiny backbone, else the plans' preset, else ``acdc``
    (the paper's settings). Patch size, queries, classes, channels and the background choice always follow the
    plans, because the data was prepared for them; the backbone input side is the supported size nearest the
    patch's in-plane size. SAM's own weights are trained only when ``train_backbone`` says so; by default
    (None) only for ``tiny``, whose random weights a frozen model could not use.

    ``queries``: ``class_slots`` (default; one query per foreground class, background = what no class claims)
    or ``matched`` (the paper's N queries from the plans, background a segment as the plans say, Hungarian
    matching). ``image_size``: the backbone input side (default: LiteMedSAM at 128, the cheaper of its sizes
    on a CPU; the others at the supported size nearest the patch). ``prompt_variant``: where the box prompts
    come from (default ``mask``: the box of each auxiliary mask's largest component, the learned box where the
    mask is empty; the paper's ``mask_avg_box`` averages it with the learned box).
    """
    backbone_spec(backbone)  # unknown names fail here with the list of backbones
    name = preset or ("tiny" if backbone == "tiny" else (plans.preset or "acdc"))
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    slots = queries == "class_slots"
    include_background = False if slots else plans.include_background
    overrides = {
        "backbone": backbone,
        "patch_size": tuple(plans.patch_size),
        "num_queries": plans.num_classes - 1 if slots else plans.num_queries,
        "num_classes": plans.num_classes,
        "in_channels": plans.num_channels,
        "include_background": include_background,
        "prompt_mode": prompt_mode,
        "queries": queries,
        "train_backbone": backbone == "tiny" if train_backbone is None else train_backbone,
    }
    if image_size is None and backbone == "lite_medsam":
        image_size = CPU_LITE_MEDSAM_SIZE
    if image_size is not None:
        overrides["image_size"] = image_size
    config = preset_config(name, **overrides)
    return replace(config, prompt_generator=replace(config.prompt_generator, variant=prompt_variant))


def backbone_weights_for(backbone: str, checkpoint: Path | None) -> Path | None:
    """The official weights to load: ``checkpoint`` if given, else the cached download, else None for ``tiny``.

    Raises:
        ConfigError: A pretrained backbone without weights (training SAM's frozen parts from random
            initialisation would be meaningless).
    """
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ConfigError(f"{checkpoint}: backbone weights not found; check --checkpoint")
        return Path(checkpoint)
    if backbone == "tiny":
        return None
    cached = find_cached_weights(backbone) if backbone in WEIGHTS else None
    if cached is not None:
        return cached
    hint = backbone_spec(backbone).weights_hint
    raise ConfigError(
        f"backbone {backbone} needs its pretrained weights ({hint}); pass --checkpoint FILE"
        + (f" or run 'masksam weights {backbone}'" if backbone in WEIGHTS else "")
    )
