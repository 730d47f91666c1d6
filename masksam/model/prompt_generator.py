"""Prompt generator (paper §2.3, Fig. 3b, Fig. 5): auxiliary masks, boxes and classifier tokens.

A U-Net-like path starts from the neck embedding and doubles the in-plane resolution up to the backbone
input size with ConvTranspose3d (1, 2, 2); at each step it concatenates encoder levels brought to that
resolution. Multi-scale encoders (TinyViT) give each level at its own resolution; an isotropic ViT's
levels are assigned deep-to-shallow to successive steps and upsampled there (as UNETR does).
Outputs (per patch, with G = B): auxiliary mask logits, learned boxes and classifier tokens of N queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.common import cpu_conv3d_region, float32_region
from masksam.model.config import PromptGeneratorConfig
from masksam.model.depth import unfold_depth

# Share of a slice that one segment covers, for the auxiliary masks' starting logit (ACDC's classes: 1-4%).
MASK_PRIOR = 0.02


@dataclass
class GeneratedPrompts:
    """aux_mask_logits (B, N, T, S, S); boxes (B, N, T, 4) normalised xyxy; class_tokens (B, N, T, D)."""

    aux_mask_logits: torch.Tensor
    boxes: torch.Tensor
    class_tokens: torch.Tensor


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3×3 conv + InstanceNorm + LeakyReLU over (T, h, w)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01),
    )


def upsample_2x(in_channels: int, out_channels: int) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(in_channels, out_channels, kernel_size=(1, 2, 2), stride=(1, 2, 2))


def assign_levels(level_sizes: list[int], embedding_size: int, num_steps: int) -> list[int]:
    """Step (0 = embedding resolution) at which each level (shallow to deep) joins the path.

    Levels larger than the embedding join at their own resolution; levels at the embedding resolution
    of an isotropic encoder join deep-to-shallow at steps 1, 2, ... (capped at `num_steps`).
    """
    if any(size > embedding_size for size in level_sizes):
        return [min(num_steps, int(math.log2(size // embedding_size))) for size in level_sizes]
    count = len(level_sizes)
    return [min(num_steps, count - i) for i in range(count)]


class LevelSkip(nn.Module):
    """1×1×1 projection of one encoder level, then 2× upsamplings up to the step where it joins."""

    def __init__(self, in_channels: int, out_channels: int, upsamplings: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(in_channels, out_channels, kernel_size=1), nn.LeakyReLU(0.01)]
        layers += [upsample_2x(out_channels, out_channels) for _ in range(upsamplings)]
        self.path = nn.Sequential(*layers)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.path(level)


class PromptGenerator(nn.Module):
    """Multi-level features -> N auxiliary masks, N boxes and N auxiliary classifier tokens per slice."""

    def __init__(
        self,
        *,
        level_channels: list[int],
        level_sizes: list[int],
        embedding_channels: int,
        embedding_size: int,
        image_size: int,
        num_queries: int,
        token_dim: int,
        config: PromptGeneratorConfig,
    ) -> None:
        super().__init__()
        num_steps = int(math.log2(image_size // embedding_size))
        if len(config.widths) < num_steps + 1:
            raise ValueError(f"prompt generator needs {num_steps + 1} widths, got {config.widths}")
        widths = list(config.widths[-(num_steps + 1) :])  # the finest step always gets widths[-1]
        self.num_queries = num_queries
        self.level_steps = assign_levels(level_sizes, embedding_size, num_steps)
        self.skips = nn.ModuleList(
            LevelSkip(channels, widths[step], step - int(math.log2(size // embedding_size)))
            for channels, size, step in zip(level_channels, level_sizes, self.level_steps, strict=True)
        )
        self.ups = nn.ModuleList(upsample_2x(widths[i - 1], widths[i]) for i in range(1, num_steps + 1))
        blocks = []
        for step in range(num_steps + 1):
            incoming = (embedding_channels if step == 0 else widths[step]) + widths[step] * self.level_steps.count(step)
            blocks.append(conv_block(incoming, widths[step]))
        self.blocks = nn.ModuleList(blocks)
        self.mask_head = nn.Conv3d(widths[-1], num_queries, kernel_size=1)
        # Start every pixel at the foreground prior instead of at logit 0 (RetinaNet's prior initialisation):
        # at 0 every pixel is "half foreground", the Dice loss hardly moves, and AdamW needs thousands of steps
        # to walk the bias down; from the prior the masks become informative within tens of steps.
        nn.init.constant_(self.mask_head.bias, math.log(MASK_PRIOR / (1 - MASK_PRIOR)))
        pooled = sum(widths)
        self.box_head = nn.Linear(pooled, num_queries)  # per pooled 2×2 position: one coordinate per query
        # Small image-dependent part at first, so each query starts at its own box (`box_bias`), not all at one.
        nn.init.normal_(self.box_head.weight, std=0.01)
        nn.init.zeros_(self.box_head.bias)
        self.box_bias = nn.Parameter(torch.zeros(num_queries, 4))  # (N, 4) logits of (cx, cy, w, h)
        self.set_initial_boxes(spread_boxes(num_queries))
        self.token_head = nn.Linear(pooled, num_queries * token_dim)

    @torch.no_grad()
    def set_initial_boxes(self, boxes: torch.Tensor) -> None:
        """Starts query n's learned box at ``boxes[n]`` ((N, 4) normalised xyxy), e.g. a class's typical box."""
        boxes = boxes.to(self.box_bias).clamp(0.0, 1.0)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0.02)
        # centre = sigmoid(raw) and size = 2 * min(centre, 1 - centre) * sigmoid(raw): invert both.
        room = 2 * torch.minimum(centre, 1 - centre).clamp(min=0.02)
        self.box_bias.copy_(
            torch.cat([torch.logit(centre.clamp(0.01, 0.99)), torch.logit((size / room).clamp(0.01, 0.99))], 1)
        )

    def forward(self, embedding: torch.Tensor, levels: list[torch.Tensor], num_slices: int) -> GeneratedPrompts:
        """embedding (B*T, C, h, w) and levels (B*T, C_l, h_l, w_l) -> prompts for B patches."""
        with cpu_conv3d_region(embedding.device):
            volumes = [unfold_depth(level.float(), num_slices) for level in levels]  # (B, C_l, T, h_l, w_l)
            x = unfold_depth(embedding.float(), num_slices)  # (B, C, T, h, w)
            stage_outputs = []
            for step, block in enumerate(self.blocks):
                if step > 0:
                    x = self.ups[step - 1](x)
                joining = [
                    skip(v) for skip, v, s in zip(self.skips, volumes, self.level_steps, strict=True) if s == step
                ]
                x = block(torch.cat([x, *joining], dim=1))
                stage_outputs.append(x)
            aux_mask_logits = self.mask_head(x)  # (B, N, T, S, S)

        batch, _, depth = x.shape[:3]
        boxes_pooled = torch.cat([F.adaptive_avg_pool3d(s, (depth, 2, 2)) for s in stage_outputs], dim=1)
        # The box coordinates in float32 under any autocast: bf16 rounds them by up to 1/256 of the image (a pixel
        # of a 256² image), and they become the prompt encoder's box corners. The head is tiny.
        with float32_region(boxes_pooled.device):
            raw = self.box_head(boxes_pooled.float().permute(0, 2, 3, 4, 1))  # (B, T, 2, 2, N)
            raw = raw.reshape(batch, depth, 4, self.num_queries).permute(0, 3, 1, 2)  # (B, N, T, 4)
            boxes = centred_box(raw + self.box_bias[None, :, None, :])
        tokens_pooled = torch.cat([F.adaptive_avg_pool3d(s, (depth, 1, 1)) for s in stage_outputs], dim=1)
        tokens = self.token_head(tokens_pooled.flatten(2).transpose(1, 2))  # (B, T, N*D)
        tokens = tokens.reshape(batch, depth, self.num_queries, -1).transpose(1, 2)  # (B, N, T, D)
        return GeneratedPrompts(aux_mask_logits=aux_mask_logits, boxes=boxes, class_tokens=tokens)


def centred_box(raw: torch.Tensor) -> torch.Tensor:
    """(..., 4) unconstrained (cx, cy, w, h) logits -> xyxy in [0, 1] with x1 <= x2 and y1 <= y2.

    centre = sigmoid(raw[:2]); the half-size is a sigmoid share of the room to the nearer border, so a box never
    leaves the image and no coordinate sits clamped at a border with a zero gradient.
    """
    centre = torch.sigmoid(raw[..., :2])
    half = torch.minimum(centre, 1 - centre) * torch.sigmoid(raw[..., 2:])
    return torch.cat([centre - half, centre + half], dim=-1)


def spread_boxes(num_queries: int) -> torch.Tensor:
    """(N, 4) xyxy boxes of side 0.4 centred on a near-square grid over the image: distinct first prompts."""
    columns = math.ceil(math.sqrt(num_queries))
    rows = math.ceil(num_queries / columns)
    index = torch.arange(num_queries)
    cx = (index % columns + 0.5) / columns
    cy = (index // columns + 0.5) / rows
    centre = torch.stack([cx, cy], dim=1)
    return torch.cat([centre - 0.2, centre + 0.2], dim=1).clamp(0.0, 1.0)


def largest_components(foreground: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., H, W) bool keeping only each map's largest 8-connected component.

    Runs on the CPU (scipy's labelling) on a detached copy: it decides where a box goes, nothing flows back.
    """
    from scipy import ndimage

    if foreground.is_meta:  # shape-only tensors (cost and shape checks): nothing to label
        return foreground
    height, width = foreground.shape[-2:]
    maps = foreground.detach().reshape(-1, height, width).cpu().numpy()  # (M, H, W)
    within_map = np.zeros((3, 3, 3), dtype=bool)
    within_map[1] = True  # 8-connectivity inside a map, none across maps
    labels, count = ndimage.label(maps, structure=within_map)  # globally numbered components
    if count == 0:
        return foreground.clone()
    flat = labels.reshape(-1)
    sizes = np.bincount(flat, minlength=count + 1)[1:]  # (count,) pixels per component
    _, first_pixel = np.unique(flat, return_index=True)
    owner = first_pixel[1:] // (height * width)  # (count,) map of each component (label 0 is background)
    by_map_then_size = np.lexsort((-sizes, owner))
    first_of_map = np.ones(count, dtype=bool)
    first_of_map[1:] = owner[by_map_then_size][1:] != owner[by_map_then_size][:-1]
    keep = np.zeros(count + 1, dtype=bool)
    keep[by_map_then_size[first_of_map] + 1] = True
    kept = torch.from_numpy(keep[labels]).to(foreground.device)
    return kept.reshape(foreground.shape)


def expand_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """(..., 4) normalised xyxy -> every edge moved outward by ``margin`` (a fraction of the side), inside [0, 1]."""
    if margin == 0:
        return boxes
    outward = torch.tensor([-margin, -margin, margin, margin], device=boxes.device, dtype=boxes.dtype)
    return (boxes + outward).clamp(0.0, 1.0)


def mask_to_box(
    mask_logits: torch.Tensor, threshold: float = 0.0, *, largest_component: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of thresholded masks, vectorised over all leading dimensions.

    Arguments:
      mask_logits: (..., H, W).
      largest_component: the box of each mask's largest connected component only (stray islands ignored).
    Returns:
      boxes (..., 4) normalised xyxy (x1 = first column / W, x2 = (last column + 1) / W; same for y),
      and a (...) bool tensor, False for empty masks (whose box is [0, 0, 1, 1]).
    """
    foreground = mask_logits > threshold
    if largest_component:
        foreground = largest_components(foreground)
    height, width = foreground.shape[-2:]
    rows = foreground.any(dim=-1)  # (..., H)
    cols = foreground.any(dim=-2)  # (..., W)
    row_index = torch.arange(height, device=mask_logits.device)
    col_index = torch.arange(width, device=mask_logits.device)
    y1 = torch.where(rows, row_index, height).amin(dim=-1)
    y2 = torch.where(rows, row_index, -1).amax(dim=-1) + 1
    x1 = torch.where(cols, col_index, width).amin(dim=-1)
    x2 = torch.where(cols, col_index, -1).amax(dim=-1) + 1
    nonempty = rows.any(dim=-1)
    scale = torch.tensor([width, height, width, height], device=mask_logits.device, dtype=torch.float32)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float() / scale
    full = torch.tensor([0.0, 0.0, 1.0, 1.0], device=mask_logits.device)
    return torch.where(nonempty[..., None], boxes, full), nonempty
