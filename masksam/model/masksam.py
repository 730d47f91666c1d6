"""The composed MaskSAM model (paper Fig. 2): it only wires the parts together.

volume patch -> modality adapter -> slices -> adapted SAM image encoder -> prompt generator
  -> (boxes + auxiliary masks) -> frozen SAM prompt encoder -> adapted SAM mask decoder with classifier tokens
  -> per slice: N class logits (K+1) and N mask logits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.image_encoder_vit import ImageEncoderViT
from masksam.backbones.sam import SamBackbone, backbone_spec, build_backbone, load_backbone_weights
from masksam.errors import ConfigError
from masksam.model.config import MaskSamConfig
from masksam.model.depth import fold_depth
from masksam.model.image_encoder import AdaptedViTEncoder
from masksam.model.mask_decoder import AdaptedMaskDecoder
from masksam.model.modality_adapter import ModalityAdapter
from masksam.model.prompt_generator import GeneratedPrompts, PromptGenerator, expand_boxes, mask_to_box
from masksam.model.refinement import query_segments, segment_prompts


@dataclass
class DenoisingPrompts:
    """Training-only queries prompted with noised ground truth (DN-DETR, MP-Former), D of them per patch.

    boxes: (B, D, T, 4) normalised xyxy box prompts (jittered ground-truth boxes).
    masks: (B, D, T, S, S) mask-prompt logits (noised ground-truth masks), or None.
    slots: (D,) long, the query whose classifier tokens each denoising query borrows (class slots: the
      slot of its class), or None: every one reads the mean of the queries' tokens.
    """

    boxes: torch.Tensor
    masks: torch.Tensor | None = None
    slots: torch.Tensor | None = None


@dataclass
class MaskSamOutput:
    """Per-slice predictions, G = B*T slices ordered (B, T):

    class_logits (G, N, K+1), last index "no object"; mask_logits (G, N, H, W) final masks;
    aux_mask_logits (G, N, H, W) and aux_boxes (G, N, 4) from the prompt generator (auxiliary losses);
    prompt_boxes (G, N, 4) the boxes actually given to SAM's prompt encoder (normalised xyxy);
    denoising_class_logits (G, D, K+1) and denoising_mask_logits (G, D, H, W) of the denoising queries
    (training only; None without them).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    aux_mask_logits: torch.Tensor
    aux_boxes: torch.Tensor
    prompt_boxes: torch.Tensor
    denoising_class_logits: torch.Tensor | None = None
    denoising_mask_logits: torch.Tensor | None = None


def per_slice(x: torch.Tensor) -> torch.Tensor:
    """(B, N, T, ...) -> (B*T, N, ...)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


def resize_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size), bilinear (align_corners=False); no work when already at `size`.

    Bilinear resampling to the same size reproduces its input exactly, so skipping it changes nothing; it
    saves a pass over every query's mask (LiteMedSAM's masks are already at 256² = a 256² patch).
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def per_query(x: torch.Tensor, num_slices: int) -> torch.Tensor:
    """(B*T, N, ...) -> (B, N, T, ...), the inverse of `per_slice`."""
    return x.reshape(-1, num_slices, *x.shape[1:]).transpose(1, 2)


class MaskPromptGate(nn.Module):
    """Per-channel gate, starting at 0, on the mask-prompt term of SAM's dense prompt.

    MaskSAM's dense prompt is no_mask_embed + gate · mask_downscaling(mask logits): an untrained model gives the
    decoder exactly the dense prompt of a box-only prompt (LiteMedSAM was trained with ``masks=None`` only), and
    the mask path joins as the gate learns.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(channels))

    def forward(self, embedded_masks: torch.Tensor) -> torch.Tensor:
        """(Q, C, h, w) -> (Q, C, h, w) gated."""
        return self.gate.view(1, -1, 1, 1) * embedded_masks


# SAM parts MaskSAM's forward never reads: the IoU head, and the prompt encoder's point embeddings
# (our prompts are boxes and masks). They stay frozen even when SAM's weights are trained.
UNUSED_SAM_PARTS = (
    "mask_decoder.decoder.iou_prediction_head.",
    "prompt_encoder.not_a_point_embed.",
    "prompt_encoder.point_embeddings.0.",
    "prompt_encoder.point_embeddings.1.",
)


class MaskSAM(nn.Module):
    """Prompt-free, mask-classification SAM for (B, C, T, H, W) patches."""

    def __init__(self, *, config: MaskSamConfig, backbone: SamBackbone) -> None:
        super().__init__()
        self.config = config
        spec = backbone.spec
        num_slices = config.num_slices
        self.modality_adapter = ModalityAdapter(
            in_channels=config.in_channels,
            hidden=config.modality_hidden,
            image_size=config.image_size,
            spec=spec,
        )
        if isinstance(backbone.image_encoder, ImageEncoderViT):
            self.image_encoder: nn.Module = AdaptedViTEncoder(
                backbone.image_encoder, config=config.adapters, num_slices=num_slices
            )
        else:
            from masksam.model.image_encoder_tiny_vit import AdaptedTinyViTEncoder

            self.image_encoder = AdaptedTinyViTEncoder(
                backbone.image_encoder, config=config.adapters, num_slices=num_slices
            )
        self.prompt_generator = PromptGenerator(
            level_channels=self.image_encoder.level_channels,
            level_sizes=self.image_encoder.level_sizes,
            embedding_channels=spec.prompt_dim,
            embedding_size=backbone.embedding_size,
            image_size=config.image_size,
            num_queries=config.num_queries,
            token_dim=spec.prompt_dim,
            config=config.prompt_generator,
        )
        self.prompt_encoder = backbone.prompt_encoder
        self.mask_prompt_gate = MaskPromptGate(spec.prompt_dim) if config.prompt_generator.variant != "box" else None
        self.mask_decoder = AdaptedMaskDecoder(
            backbone.mask_decoder,
            num_queries=config.num_queries,
            num_classes=config.num_classes,
            num_slices=num_slices,
            config=config.adapters,
        )
        if config.train_backbone:
            for module in self.sam_modules():
                module.requires_grad_(True)
            unused = self.unused_sam_parts()
            for name, parameter in self.named_parameters():
                if name.startswith(unused):
                    parameter.requires_grad_(False)  # never reached by the loss: no gradient, DDP would stall

    def unused_sam_parts(self) -> tuple[str, ...]:
        """Prefixes of SAM's parameters this model's forward never reads: `UNUSED_SAM_PARTS`, and the mask
        prompt's downscaling path when the auxiliary masks are no prompts (prompt-generator variant "box")."""
        if self.uses_mask_prompts:
            return UNUSED_SAM_PARTS
        return (*UNUSED_SAM_PARTS, "prompt_encoder.mask_downscaling.")

    def sam_modules(self) -> list[nn.Module]:
        """SAM's own parts: image encoder, prompt encoder and mask decoder (without our adapters)."""
        return [self.image_encoder.encoder, self.prompt_encoder, self.mask_decoder.decoder]

    def frozen_modules(self) -> list[nn.Module]:
        """SAM's parts when they are frozen (MaskSAM's default): never trained, always in eval mode."""
        return [] if self.config.train_backbone else self.sam_modules()

    def train(self, mode: bool = True) -> MaskSAM:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def prompt_boxes(self, prompts: GeneratedPrompts, given_boxes: torch.Tensor | None) -> torch.Tensor:
        """The (B, N, T, 4) boxes for the prompt encoder, by prompt mode and generator variant (Fig. 5)."""
        if self.config.prompt_mode == "ground_truth":
            if given_boxes is None:
                raise ValueError("prompt_mode 'ground_truth' needs boxes (B*T, N, 4) from the labels")
            return per_query(given_boxes, self.config.num_slices)
        variant = self.config.prompt_generator.variant
        if variant in ("box", "mask_box"):
            return prompts.boxes
        generator = self.config.prompt_generator
        mask_boxes, nonempty = mask_to_box(
            prompts.aux_mask_logits.detach(),
            generator.mask_threshold,
            largest_component=generator.mask_box_region == "largest_component",
        )
        mask_boxes = expand_boxes(mask_boxes, generator.box_margin)
        if variant == "mask":  # an empty mask has no box: its query keeps the learned one
            return torch.where(nonempty[..., None], mask_boxes, prompts.boxes)
        averaged = (prompts.boxes + mask_boxes) / 2
        return torch.where(nonempty[..., None], averaged, prompts.boxes)

    def forward(
        self,
        volume: torch.Tensor,
        boxes: torch.Tensor | None = None,
        denoising: DenoisingPrompts | None = None,
        refinement_passes: int = 0,
    ) -> MaskSamOutput:
        """
        Arguments:
          volume: (B, C, T, H, W) normalised image patch.
          boxes: (B*T, N, 4) normalised xyxy prompts, only in prompt_mode "ground_truth".
          denoising: extra training queries prompted with noised ground truth, decoded beside the N queries.
          refinement_passes: decoder passes after the first, each prompted with the previous pass's segments
            (:mod:`masksam.model.refinement`; inference, generated prompts only).
        """
        if refinement_passes and (denoising is not None or self.config.prompt_mode == "ground_truth"):
            raise ValueError("refinement passes are for inference with generated prompts (no denoising queries)")
        batch, _, num_slices, height, width = volume.shape
        rgb = self.modality_adapter(volume)  # (B, 3, T, S, S)
        features = self.image_encoder(fold_depth(rgb))  # embedding (B*T, C, h, w)
        prompts = self.prompt_generator(features.embedding, features.levels, num_slices)
        prompt_boxes = self.prompt_boxes(prompts, boxes)  # (B, N, T, 4)
        mask_prompts = prompts.aux_mask_logits if self.uses_mask_prompts else None  # (B, N, T, S, S)
        query_tokens = self.mask_decoder.classifier_tokens(prompts.class_tokens)  # (B, N, T, C)
        tokens = query_tokens
        if denoising is not None:
            prompt_boxes = torch.cat([prompt_boxes, denoising.boxes.to(prompt_boxes)], dim=1)  # (B, Q, T, 4)
            if mask_prompts is not None:
                noised = denoising.masks
                if noised is None:  # no mask given: an empty one
                    count = denoising.boxes.shape[1]
                    noised = mask_prompts.new_full((batch, count, *mask_prompts.shape[2:]), -20.0)
                mask_prompts = torch.cat([mask_prompts, noised.to(mask_prompts)], dim=1)  # (B, Q, T, S, S)
            tokens = torch.cat([tokens, self.denoising_tokens(tokens, denoising)], dim=1)  # (B, Q, T, C)
        class_logits, masks = self.decode(features.embedding, prompt_boxes, mask_prompts, tokens, (height, width))

        aux_masks = prompts.aux_mask_logits
        if aux_masks.shape[-2:] != (height, width):
            aux_masks = F.interpolate(
                aux_masks, size=(num_slices, height, width), mode="trilinear", align_corners=False
            )
        num_queries = self.config.num_queries
        output = MaskSamOutput(
            class_logits=class_logits[:, :num_queries],
            mask_logits=masks[:, :num_queries],
            aux_mask_logits=per_slice(aux_masks),
            aux_boxes=per_slice(prompts.boxes),
            prompt_boxes=per_slice(prompt_boxes[:, :num_queries]),
            denoising_class_logits=class_logits[:, num_queries:] if denoising is not None else None,
            denoising_mask_logits=masks[:, num_queries:] if denoising is not None else None,
        )
        for _ in range(refinement_passes):
            output = self.refine(output, features.embedding, query_tokens)
        return output

    def decode(
        self,
        embedding: torch.Tensor,
        prompt_boxes: torch.Tensor,
        mask_prompts: torch.Tensor | None,
        tokens: torch.Tensor,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder pass of Q queries over encoded slices.

        Arguments:
          embedding: (B*T, C, h, w) image embeddings.
          prompt_boxes: (B, Q, T, 4) normalised xyxy box prompts.
          mask_prompts: (B, Q, T, S, S) mask-prompt logits, or None.
          tokens: (B, Q, T, C) classifier tokens.
          size: (H, W) of the patch.

        Returns:
          class logits (G, Q, K+1) and mask logits (G, Q, H, W), G = B*T slices.
        """
        batch, num_decoded, num_slices = prompt_boxes.shape[:3]
        image_size = self.config.image_size
        if mask_prompts is not None:
            flat = mask_prompts.reshape(-1, 1, image_size, image_size)  # (B*Q*T, 1, S, S)
            mask_prompts = resize_bilinear(flat, self.prompt_encoder.mask_input_size)
        sparse, _ = self.prompt_encoder(boxes=prompt_boxes.reshape(-1, 4) * image_size)  # (B*Q*T, 2, C)
        decoded = self.mask_decoder(
            embedding,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            self.dense_prompts(mask_prompts),
            tokens.reshape(-1, tokens.shape[-1]),  # (B*Q*T, C)
            num_decoded,
        )
        masks = resize_bilinear(decoded.mask_logits.unsqueeze(1), size)  # (B*Q*T, 1, H, W)
        masks = per_slice(masks.reshape(batch, num_decoded, num_slices, *size))  # (G, Q, H, W)
        class_logits = per_slice(decoded.class_logits.reshape(batch, num_decoded, num_slices, -1))  # (G, Q, K+1)
        return class_logits, masks

    def refine(self, output: MaskSamOutput, embedding: torch.Tensor, tokens: torch.Tensor) -> MaskSamOutput:
        """One more decoder pass, each query prompted with its previous segment (:mod:`masksam.model.refinement`).

        Arguments:
          output: the previous pass (no denoising queries).
          embedding: (B*T, C, h, w) the image embeddings it decoded.
          tokens: (B, N, T, C) the queries' classifier tokens.

        Returns:
          the output with the refined queries' class logits, masks and prompt boxes; a query whose segment was
          empty keeps its previous ones.
        """
        num_slices = self.config.num_slices
        segments = query_segments(
            output.class_logits, output.mask_logits, include_background=self.config.include_background
        )  # (G, N, H, W)
        mask_size = self.config.image_size if self.uses_mask_prompts else None
        boxes, masks, nonempty = segment_prompts(segments, mask_size)  # (G, N, 4), (G, N, S, S), (G, N)
        prompts = DenoisingPrompts(
            boxes=per_query(boxes, num_slices),  # (B, N, T, 4)
            masks=None if masks is None else per_query(masks, num_slices),  # (B, N, T, S, S)
            slots=torch.arange(boxes.shape[1]) if self.config.queries == "class_slots" else None,
        )
        class_logits, mask_logits = self.decode(
            embedding,
            prompts.boxes.to(output.prompt_boxes),
            None if prompts.masks is None else prompts.masks.to(output.mask_logits),
            self.denoising_tokens(tokens, prompts),  # the tokens the denoising queries were trained with
            tuple(output.mask_logits.shape[-2:]),
        )
        return replace(
            output,
            class_logits=torch.where(nonempty[..., None], class_logits, output.class_logits),
            mask_logits=torch.where(nonempty[..., None, None], mask_logits, output.mask_logits),
            prompt_boxes=torch.where(nonempty[..., None], boxes.to(output.prompt_boxes), output.prompt_boxes),
        )

    @property
    def uses_mask_prompts(self) -> bool:
        """The auxiliary masks are mask prompts (every prompt-generator variant but "box")."""
        return self.mask_prompt_gate is not None

    def dense_prompts(self, mask_prompts: torch.Tensor | None) -> torch.Tensor:
        """(Q, 1, 4h, 4w) mask logits or None -> (Q, C, h, w) dense prompts, or (1, C, 1, 1) without masks."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)  # (1, C, 1, 1)
        if mask_prompts is None or not self.uses_mask_prompts:
            return no_mask
        return no_mask + self.mask_prompt_gate(self.prompt_encoder.embed_masks(mask_prompts))

    @staticmethod
    def denoising_tokens(tokens: torch.Tensor, denoising: DenoisingPrompts) -> torch.Tensor:
        """(B, N, T, C) query tokens -> (B, D, T, C) tokens of the denoising queries.

        With slots, each borrows its slot's tokens (the query it trains); otherwise the mean of the N queries'
        tokens, so its class has to come from what it segments, not from a query's identity.
        """
        if denoising.slots is not None:
            return tokens[:, denoising.slots.to(tokens.device)]
        count = denoising.boxes.shape[1]
        return tokens.mean(dim=1, keepdim=True).expand(-1, count, -1, -1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_masksam(config: MaskSamConfig, checkpoint: str | Path | None = None) -> MaskSAM:
    """Build the backbone named in `config`, load its official weights strictly if given, and wrap it.

    Raises:
        ConfigError: unknown backbone or unsupported input size, or ``train_backbone`` on TinyViT.
        CheckpointError: unreadable weights, or weights of another architecture.
    """
    if config.train_backbone and backbone_spec(config.backbone).encoder != "vit":
        raise ConfigError(
            f"train_backbone is for the ViT backbones; {config.backbone}'s TinyViT stays frozen "
            "(its stage 0 runs without autograd): use --freeze-backbone"
        )
    backbone = build_backbone(
        config.backbone, image_size=config.image_size, position_adaptation=config.position_adaptation
    )
    if checkpoint is not None:
        load_backbone_weights(backbone, checkpoint)
    return MaskSAM(config=config, backbone=backbone)
