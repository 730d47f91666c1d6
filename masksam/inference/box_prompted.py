"""Zero-shot SAM with ground-truth box prompts, slice by slice: the paper's "MedSAM bbox" baseline.

For every slice and every class present in the reference, the box around that class's pixels is given to the
frozen SAM (image encoder, prompt encoder, mask decoder, single-mask output), and each mask gets its box's
class. Where masks overlap, the class with the smaller box wins: a box around a ring (the myocardium) also
holds what the ring encloses (the left-ventricle cavity), and SAM then often segments the whole disc, while
the smaller box is the more specific prompt. The reference is used only for the boxes (and for which classes
are present), as in the paper's MedSAM rows.

Slices are prepared as LiteMedSAM prepares them: intensities clipped to the volume's 0.5-99.5 percentiles and
scaled to [0, 1], the longer side resized to the backbone's input size and the rest zero-padded (bottom/right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from masksam.backbones.sam import SamBackbone, backbone_pixels


@dataclass(frozen=True)
class BoxPromptSettings:
    """Intensity window (volume percentiles) and how many slices go through the encoder at once."""

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    slices_per_batch: int = 4


def unit_range(volume: np.ndarray, settings: BoxPromptSettings = BoxPromptSettings()) -> np.ndarray:
    """Clip to the volume's percentiles and scale to [0, 1] (float32, same shape)."""
    low, high = np.percentile(volume, [settings.lower_percentile, settings.upper_percentile])
    scaled = (np.clip(volume, low, high) - low) / max(float(high - low), 1e-8)
    return scaled.astype(np.float32)


def class_boxes(labels: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight xyxy pixel boxes of each class on each slice.

    Args:
        labels: (S, H, W) integer label slices.
        classes: the K class ids to box.

    Returns:
        boxes (S, K, 4) float xyxy with x2/y2 the last pixel's index (zeros where absent), and present (S, K) bool.
    """
    class_ids = torch.as_tensor(list(classes), device=labels.device)
    masks = labels[:, None] == class_ids[None, :, None, None]  # (S, K, H, W)
    rows, cols = masks.any(dim=3), masks.any(dim=2)  # (S, K, H), (S, K, W)
    present = rows.any(dim=2)

    def first_last(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(hits.shape[-1], device=hits.device)
        first = torch.where(hits, index, hits.shape[-1]).amin(dim=-1)
        last = torch.where(hits, index, -1).amax(dim=-1)
        return first, last

    (y1, y2), (x1, x2) = first_last(rows), first_last(cols)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float() * present[..., None]
    return boxes, present


def _to_backbone_input(backbone: SamBackbone, slices: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(S, H, W) slices in [0, 1] -> (S, 3, size, size) encoder input, and the resize factor applied."""
    size = backbone.image_size
    height, width = slices.shape[-2:]
    scale = size / max(height, width)
    resized_hw = (round(height * scale), round(width * scale))
    resized = F.interpolate(slices[:, None], size=resized_hw, mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, size - resized_hw[1], 0, size - resized_hw[0]))  # (S, 1, size, size)
    return backbone_pixels(padded, backbone.spec), scale


@torch.no_grad()
def box_prompted_logits(backbone: SamBackbone, slices: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """SAM's single-mask logits for K boxes on each of S slices.

    Args:
        backbone: a frozen SAM with pretrained weights.
        slices: (S, H, W) grey slices scaled to [0, 1].
        boxes: (S, K, 4) xyxy boxes in pixels of the slices.

    Returns:
        (S, K, H, W) mask logits at the slices' resolution.
    """
    num_slices, num_boxes = boxes.shape[:2]
    height, width = slices.shape[-2:]
    encoder_input, scale = _to_backbone_input(backbone, slices)
    embeddings = backbone.image_encoder(encoder_input)  # (S, C, h, w)
    sparse, dense = backbone.prompt_encoder(boxes=(boxes * scale).reshape(-1, 4))  # (S*K, 2, C), (S*K, C, h, w)
    low_res, _ = backbone.mask_decoder(
        image_embeddings=embeddings.repeat_interleave(num_boxes, dim=0),  # (S*K, C, h, w)
        image_pe=backbone.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )  # (S*K, 1, 4h, 4w)
    size = backbone.image_size
    framed = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
    cropped = framed[..., : round(height * scale), : round(width * scale)]
    logits = F.interpolate(cropped, size=(height, width), mode="bilinear", align_corners=False)
    return logits.reshape(num_slices, num_boxes, height, width)


def box_prompted_labels(
    backbone: SamBackbone,
    volume: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[int],
    *,
    settings: BoxPromptSettings = BoxPromptSettings(),
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Label map of a volume segmented slice by slice from the reference's boxes.

    Args:
        backbone: a frozen, pretrained SAM.
        volume: (S, H, W) image with the slice axis first.
        reference: (S, H, W) integer labels of the same shape (only their boxes are used).
        classes: the foreground class ids to prompt.
        settings: intensity window and encoder batch.
        device: where SAM runs.

    Returns:
        (S, H, W) int16 labels: among the prompted classes whose mask logit is positive, the one with the
        smallest box; 0 where none is.
    """
    if volume.shape != reference.shape:
        raise ValueError(f"image {volume.shape} and reference {reference.shape} differ in shape")
    slices = torch.from_numpy(unit_range(volume, settings))
    labels = torch.from_numpy(reference.astype(np.int64))
    class_ids = torch.as_tensor(list(classes))
    output = torch.zeros(labels.shape, dtype=torch.int16)
    backbone = backbone.to(device)
    for start in range(0, slices.shape[0], settings.slices_per_batch):
        chunk = slice(start, start + settings.slices_per_batch)
        boxes, present = class_boxes(labels[chunk], classes)
        if not present.any():
            continue
        logits = box_prompted_logits(backbone, slices[chunk].to(device), boxes.to(device)).cpu()  # (S, K, H, W)
        area = (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)  # (S, K)
        # Rank by box area: a positive pixel takes the class of the smallest box that claims it.
        rank = torch.where(present, area, float("inf"))[..., None, None]  # (S, K, 1, 1)
        claims = torch.where(logits > 0, rank, float("inf"))  # (S, K, H, W)
        smallest, winner = claims.min(dim=1)  # (S, H, W)
        output[chunk] = torch.where(smallest.isfinite(), class_ids[winner], 0).to(torch.int16)
    return output.numpy()


def box_prompted_folder(
    backbone: SamBackbone,
    images: Path,
    labels: Path,
    output: Path,
    classes: Sequence[int],
    *,
    slice_axis: int,
    settings: BoxPromptSettings = BoxPromptSettings(),
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Segments every case of a folder from its reference's boxes and writes ``CASE.nii.gz`` label maps.

    Args:
        backbone: a frozen, pretrained SAM.
        images: folder of ``CASE_0000.nii.gz`` images (nnU-Net naming, one channel).
        labels: folder of ``CASE.nii.gz`` references; every one of them is segmented.
        output: folder for the label maps (written atomically with the image's header); existing ones are kept.
        classes: the foreground class ids to prompt.
        slice_axis: the file axis SAM's 2D slices are taken across (the plans' ``transpose[0]``).
        settings: intensity window and encoder batch.
        device: where SAM runs.

    Returns:
        The label maps written (cases already in ``output`` are skipped).
    """
    from masksam.data.io import read_volume
    from masksam.inference.export import write_label_map

    written = []
    for label_file in sorted(Path(labels).glob("*.nii.gz")):
        target = Path(output) / label_file.name
        if target.exists():
            continue
        image_file = Path(images) / f"{label_file.name.removesuffix('.nii.gz')}_0000.nii.gz"
        volume = np.moveaxis(read_volume(image_file).array, slice_axis, 0)  # (slices, ...)
        reference = np.moveaxis(read_volume(label_file, is_label=True).array, slice_axis, 0)
        predicted = box_prompted_labels(backbone, volume, reference, classes, settings=settings, device=device)
        written.append(write_label_map(np.moveaxis(predicted, 0, slice_axis), image_file, target))
    return written
