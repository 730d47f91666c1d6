"""The frozen SAM-family backbones: a registry of specifications, builders and strict weight loading.

A `SamBackbone` holds `image_encoder`, `prompt_encoder` and `mask_decoder` under the official names, so
Meta's `sam_vit_{b,l,h}` files, MedSAM's `medsam_vit_b.pth` and LiteMedSAM's `lite_medsam.pth` load
strictly. All its parameters are frozen and it always stays in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from masksam.backbones.checkpoint import load_strict, read_state_dict
from masksam.backbones.common import freeze
from masksam.backbones.image_encoder_vit import ImageEncoderViT, PositionAdaptation
from masksam.backbones.mask_decoder import MaskDecoder
from masksam.backbones.prompt_encoder import PromptEncoder
from masksam.backbones.transformer import TwoWayTransformer
from masksam.errors import ConfigError

# Meta's SAM normalises 0-255 RGB pixels with ImageNet's statistics (segment_anything's Sam.pixel_mean/std).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of one backbone.

    Attributes:
      encoder: "vit" (SAM's ViT) or "tiny_vit" (LiteMedSAM's TinyViT).
      native_size: input side the weights were trained at; `supported_sizes` the sides we run at.
      pixel_range, pixel_mean, pixel_std: how the weights expect an image whose intensities were scaled to
        [0, 1] (see `backbone_pixels`): SAM reads 0-255 pixels normalised by ImageNet's mean and std;
        LiteMedSAM reads the [0, 1] image itself.
    """

    name: str
    encoder: Literal["vit", "tiny_vit"]
    native_size: int
    supported_sizes: tuple[int, ...]
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    pixel_range: float = 255.0
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    weights_hint: str = ""


BACKBONES: dict[str, BackboneSpec] = {
    "vit_b": BackboneSpec(
        name="vit_b",
        encoder="vit",
        native_size=1024,
        supported_sizes=(256, 512, 1024),
        weights_hint="Meta's sam_vit_b_01ec64.pth or MedSAM's medsam_vit_b.pth",
    ),
    "vit_l": BackboneSpec(
        name="vit_l",
        encoder="vit",
        native_size=1024,
        supported_sizes=(256, 512, 1024),
        embed_dim=1024,
        depth=24,
        num_heads=16,
        global_attn_indexes=(5, 11, 17, 23),
        weights_hint="Meta's sam_vit_l_0b3195.pth",
    ),
    "vit_h": BackboneSpec(
        name="vit_h",
        encoder="vit",
        native_size=1024,
        supported_sizes=(256, 512, 1024),
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
        weights_hint="Meta's sam_vit_h_4b8939.pth",
    ),
    "lite_medsam": BackboneSpec(
        name="lite_medsam",
        encoder="tiny_vit",
        native_size=256,
        supported_sizes=(128, 256),
        embed_dim=320,
        patch_size=4,
        pixel_range=1.0,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(1.0, 1.0, 1.0),
        weights_hint="lite_medsam.pth (`masksam weights lite_medsam` fetches it)",
    ),
    "tiny": BackboneSpec(
        name="tiny",
        encoder="vit",
        native_size=256,
        supported_sizes=(64, 128, 256, 512),
        embed_dim=96,
        depth=4,
        num_heads=3,
        global_attn_indexes=(1, 3),
        window_size=7,
        prompt_dim=64,
        decoder_mlp_dim=256,
        decoder_heads=4,
        weights_hint="none: random weights, for tests",
    ),
}


def pixel_affine(spec: BackboneSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (3,), with encoder input = unit image × scale + shift for a [0, 1] grey image."""
    std = torch.tensor(spec.pixel_std)
    return spec.pixel_range / std, -torch.tensor(spec.pixel_mean) / std


def backbone_pixels(unit_image: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """(N, 1, H, W) grey image in [0, 1] -> (N, 3, H, W) input in the range the backbone's weights expect.

    LiteMedSAM: the [0, 1] image replicated to three channels. SAM ViT: ×255, then minus ImageNet's pixel mean
    and over its std per channel, as Meta's ``Sam.preprocess`` does.
    """
    scale, shift = pixel_affine(spec)
    scale = scale.to(unit_image).view(1, 3, 1, 1)
    shift = shift.to(unit_image).view(1, 3, 1, 1)
    return unit_image * scale + shift


def backbone_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name, with a one-line error listing the known ones."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


class SamBackbone(nn.Module):
    """SAM's three parts under their official names; frozen, and always in eval mode."""

    def __init__(
        self,
        *,
        spec: BackboneSpec,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        freeze(self)
        self.eval()

    def train(self, mode: bool = True) -> SamBackbone:
        """Frozen weights keep eval behaviour (BatchNorm statistics, no dropout) whatever `mode` says."""
        return super().train(False)

    @property
    def image_size(self) -> int:
        return self.prompt_encoder.input_image_size[0]

    @property
    def embedding_size(self) -> int:
        return self.prompt_encoder.image_embedding_size[0]


def build_backbone(
    name: str, *, image_size: int | None = None, position_adaptation: PositionAdaptation = "crop"
) -> SamBackbone:
    """Build a backbone with random weights for inputs of `image_size` (default: its native size).

    Raises:
        ConfigError: unknown name or unsupported input size.
    """
    spec = backbone_spec(name)
    image_size = image_size or spec.native_size
    if image_size not in spec.supported_sizes:
        raise ConfigError(
            f"backbone '{name}' does not run at {image_size}×{image_size}; use one of {list(spec.supported_sizes)}"
        )
    if spec.encoder == "vit":
        image_encoder: nn.Module = ImageEncoderViT(
            img_size=image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            out_chans=spec.prompt_dim,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
            pretrain_img_size=spec.native_size if spec.native_size >= image_size else image_size,
            position_adaptation=position_adaptation,
        )
        embedding = image_size // spec.patch_size
    else:
        from masksam.backbones.tiny_vit import TinyViT

        image_encoder = TinyViT(img_size=image_size)
        embedding = image_size // 4
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_dim,
        image_embedding_size=(embedding, embedding),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=spec.prompt_dim,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=spec.prompt_dim, num_heads=spec.decoder_heads, mlp_dim=spec.decoder_mlp_dim
        ),
        iou_head_hidden_dim=spec.prompt_dim,
    )
    return SamBackbone(spec=spec, image_encoder=image_encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)


def load_backbone_weights(backbone: SamBackbone, path: str | Path) -> SamBackbone:
    """Load an official weights file into `backbone` strictly (every key and shape must match).

    Raises:
        CheckpointError: unreadable file, or keys/shapes of another architecture (named in the message).
    """
    state_dict = read_state_dict(path)
    load_strict(backbone, state_dict, source=str(path), backbone=backbone.spec.name)
    return freeze(backbone)
