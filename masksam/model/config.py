"""Typed configuration of a MaskSAM model, its presets, and JSON/YAML round-trips.

Presets are data: `PRESETS[name]` holds the fields that differ from the defaults (paper §3 settings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from masksam.errors import ConfigError
from masksam.settings_file import read_settings, write_settings

ImageAdapterKind = Literal["none", "vanilla", "depth_mlp", "depth_mlp_after_up", "depth_mlp_before_down", "depth_conv"]
TokenAdapterKind = Literal["none", "vanilla", "depth_mlp", "depth_mlp_after_up", "depth_mlp_before_down"]
MaskBoxRegion = Literal["largest_component", "all"]
PromptVariant = Literal["mask", "box", "mask_box", "mask_avg_box"]
PromptMode = Literal["generated", "ground_truth"]
QueryAssignment = Literal["matched", "class_slots"]


@dataclass(frozen=True)
class AdapterConfig:
    """Adapters and depth embeddings (paper §2.4–2.6; Tab. 4 ablations).

    image_adapter: adapter on image tokens (encoder blocks and the decoder's image->token attention);
      "depth_conv" is the DConvAdapter, "depth_mlp" the DMLPAdapter, "vanilla" a plain bottleneck.
    token_adapter: adapter on prompt tokens in the decoder (DMLPAdapter by default).
    bottleneck_ratio: bottleneck width = width * ratio (1/4 in the encoder as DESIGN §3.4).
    decoder_bottleneck: bottleneck width of the decoder adapters (64 for a 256-wide decoder).
    parallel_scale: weight of the adapter beside each MLP (0.5).
    depth_mlp_ratio: hidden width of the depth MLP as a multiple of T (4).
    encoder_depth_embedding / decoder_depth_embedding: learnable zero-initialised slice-position tables.
    """

    image_adapter: ImageAdapterKind = "depth_conv"
    token_adapter: TokenAdapterKind = "depth_mlp"
    bottleneck_ratio: float = 0.25
    decoder_bottleneck: int = 64
    parallel_scale: float = 0.5
    depth_mlp_ratio: int = 4
    encoder_depth_embedding: bool = True
    decoder_depth_embedding: bool = True


@dataclass(frozen=True)
class PromptGeneratorConfig:
    """Prompt generator (paper §2.3, Fig. 3b, Fig. 5).

    variant: "mask" (box from the auxiliary mask), "box" (learned box only), "mask_box" (learned box), or
      "mask_avg_box" (mean of learned box and mask box; the paper's best).
    widths: channels of the upsampling path, deepest first, ending at the backbone input resolution; a
      path with fewer 2× steps (a higher-resolution embedding) uses the last entries.
    mask_threshold: logit above which an auxiliary mask pixel counts when its box is computed.
    mask_box_region: "largest_component" (the box of the mask's largest connected component, so a stray
      island does not stretch it) or "all" (the box of every pixel above the threshold).
    box_margin: how far each edge of a box taken from a predicted mask (auxiliary mask, or a refinement pass's
      segment) moves outward, as a fraction of the image side. SAM keeps a segment inside its box, so a box
      as tight as a predicted mask that misses some of its segment cuts the segment off. LiteMedSAM was trained
      with tight ground-truth boxes whose every edge moved outward by 0-5 pixels of its 256² input (its
      ``bbox_shift``), 2.5 on average: 0.01 of the side.
    """

    variant: PromptVariant = "mask_avg_box"
    widths: tuple[int, ...] = (256, 128, 64, 32, 16)
    mask_threshold: float = 0.0
    mask_box_region: MaskBoxRegion = "largest_component"
    box_margin: float = 0.01

    def __post_init__(self) -> None:
        if self.mask_box_region not in ("largest_component", "all"):
            raise ConfigError(f"mask_box_region '{self.mask_box_region}' is unknown; choose largest_component or all")
        if not 0.0 <= self.box_margin < 0.5:
            raise ConfigError(f"box_margin {self.box_margin} must be in [0, 0.5) (a fraction of the image side)")


@dataclass(frozen=True)
class MaskSamConfig:
    """Everything needed to build a MaskSAM model.

    backbone: key of `masksam.backbones.sam.BACKBONES`; image_size: backbone input side.
    patch_size: (T, H, W) of the input patch; H and W are resized to `image_size` when they differ.
    in_channels: modalities C; num_classes: K classes including background; num_queries: N.
    include_background: background is one of the K classes with its own segment (authors' choice).
    prompt_mode: "generated" (prompt-free) or "ground_truth" (boxes from the labels; paper's "GT bbox").
    queries: "matched" (the paper's N interchangeable queries, Hungarian matching per slice) or "class_slots"
      (query k answers for class k, no matching; N = the number of segment classes; for datasets with at most
      one segment per class per slice, i.e. semantic labels).
    position_adaptation: how SAM's 1024-trained position tables follow a smaller input ("crop"/"interpolate").
    train_backbone: train SAM's own weights too. MaskSAM keeps them frozen (False); True is for a backbone
      without pretrained weights (``tiny``), whose frozen random decoder cannot turn prompts into masks.
      TinyViT's stage 0 stays frozen either way (it runs without autograd).
    """

    backbone: str = "lite_medsam"
    image_size: int = 256
    patch_size: tuple[int, int, int] = (4, 256, 256)
    in_channels: int = 1
    num_classes: int = 4
    num_queries: int = 8
    include_background: bool = True
    prompt_mode: PromptMode = "generated"
    queries: QueryAssignment = "matched"
    position_adaptation: Literal["crop", "interpolate"] = "crop"
    train_backbone: bool = False
    modality_hidden: int = 16
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    prompt_generator: PromptGeneratorConfig = field(default_factory=PromptGeneratorConfig)

    def __post_init__(self) -> None:
        if self.queries not in ("matched", "class_slots"):
            raise ConfigError(f"queries '{self.queries}' is unknown; choose matched or class_slots")
        if self.queries == "class_slots" and self.num_queries != self.num_segment_classes:
            raise ConfigError(
                f"class_slots needs one query per segment class: num_queries {self.num_queries} should be "
                f"{self.num_segment_classes} ({self.num_classes} classes, background "
                f"{'included' if self.include_background else 'excluded'})"
            )

    @property
    def num_slices(self) -> int:
        return self.patch_size[0]

    @property
    def num_segment_classes(self) -> int:
        """Classes that are segments (queries' targets): K, or K - 1 without background."""
        return self.num_classes - (0 if self.include_background else 1)

    def segment_class_ids(self) -> list[int]:
        """Class id of each class slot: 0..K-1, or 1..K-1 without background."""
        return list(range(0 if self.include_background else 1, self.num_classes))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskSamConfig:
        """Build from a (possibly partial) dict, rejecting unknown keys with a one-line error."""
        return _from_dict(cls, data, "config")

    def save(self, path: str | Path) -> None:
        """Write as JSON (`.json`) or YAML (`.yaml`/`.yml`), atomically."""
        write_settings(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> MaskSamConfig:
        return cls.from_dict(read_settings(path, "the model config"))


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        nested = (
            {"adapters": AdapterConfig, "prompt_generator": PromptGeneratorConfig}.get(name)
            if cls is MaskSamConfig
            else None
        )
        if nested is not None and isinstance(value, dict):
            value = _from_dict(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "acdc": {"patch_size": (4, 256, 256), "num_queries": 8, "num_classes": 4},
    "synapse": {"patch_size": (26, 256, 256), "num_queries": 24, "num_classes": 9},
    "amos": {"patch_size": (9, 512, 512), "num_queries": 24, "num_classes": 16, "image_size": 512},
    "tiny": {
        "backbone": "tiny",
        "image_size": 64,
        "patch_size": (2, 64, 64),
        "num_queries": 4,
        "num_classes": 3,
        "prompt_generator": {"widths": (32, 16, 16, 8, 8)},
    },
}


def preset_config(preset: str, **overrides: Any) -> MaskSamConfig:
    """The config of a named preset, with `overrides` (e.g. backbone="vit_b") applied on top.

    Raises:
        ConfigError: unknown preset name.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    config = MaskSamConfig.from_dict(dict(PRESETS[preset]))
    config = replace(config, **overrides) if overrides else config
    if "image_size" not in overrides:
        config = replace(config, image_size=_closest_supported_size(config))
    return config


def _closest_supported_size(config: MaskSamConfig) -> int:
    """The backbone input side nearest the patch's in-plane size (the patch is resized to it)."""
    from masksam.backbones.sam import backbone_spec

    sizes = backbone_spec(config.backbone).supported_sizes
    return min(sizes, key=lambda size: (abs(size - config.patch_size[1]), -size))
