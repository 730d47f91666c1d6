"""An untrained MaskSAM computes what its pretrained backbone computes (DESIGN §10 "step-0 fidelity").

- The modality adapter feeds the backbone its own intensity mapping (percentile clip + min-max per slice, then
  the backbone's pixel scale), whatever affine normalisation the data went through.
- Classifier tokens are silent: SAM's masks are the same with or without them.
- The dense prompt of an untrained model is SAM's box-only dense prompt (the mask-prompt gate starts at 0).
- So in ground-truth prompt mode an untrained model returns SAM's zero-shot masks from the same boxes: exactly
  for a random backbone here, and within 0.01 Dice on real ACDC slices with the real LiteMedSAM weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED, meta_modeling

from masksam.backbones.sam import BACKBONES, backbone_pixels
from masksam.inference.box_prompted import box_prompted_logits, class_boxes
from masksam.model.config import MaskSamConfig, PromptGeneratorConfig, preset_config
from masksam.model.masksam import build_masksam
from masksam.model.modality_adapter import ModalityAdapter, slice_unit_range


def test_slice_unit_range_ignores_affine_normalisation() -> None:
    generator = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 3, 32, 32, generator=generator) * 700 + 20  # (B, 1, T, H, W) raw intensities
    zscored = (grey - grey.mean()) / grey.std()
    unit = slice_unit_range(grey)
    torch.testing.assert_close(slice_unit_range(zscored), unit, atol=1e-5, rtol=0)
    lows = unit.flatten(-2).amin(-1)
    highs = unit.flatten(-2).amax(-1)
    assert torch.allclose(lows, torch.zeros_like(lows)) and torch.allclose(highs, torch.ones_like(highs))


def test_constant_slice_maps_to_zero() -> None:
    assert slice_unit_range(torch.full((1, 1, 2, 8, 8), 3.0)).abs().max() == 0


@pytest.mark.parametrize("backbone", ["lite_medsam", "vit_b"])
def test_untrained_modality_adapter_gives_the_backbone_its_own_pixels(backbone: str) -> None:
    spec = BACKBONES[backbone]
    adapter = ModalityAdapter(in_channels=2, hidden=4, image_size=16, spec=spec)
    volume = torch.randn(1, 2, 3, 16, 16)
    unit = slice_unit_range(volume.mean(dim=1, keepdim=True))  # (1, 1, T, H, W)
    expected = backbone_pixels(unit[:, :, 1], spec)  # slice 1: (1, 3, H, W)
    with torch.no_grad():
        torch.testing.assert_close(adapter(volume)[:, :, 1], expected)
    if backbone == "lite_medsam":
        torch.testing.assert_close(expected, unit[:, :, 1].expand(-1, 3, -1, -1))  # [0, 1], three channels
    else:
        torch.testing.assert_close(expected[0, 0, 0, 0], (unit[0, 0, 1, 0, 0] * 255 - 123.675) / 58.395)


def _scrambled_decoder_model(config: MaskSamConfig):
    """A model whose SAM decoder is random and whose classifier tokens are far from zero."""
    torch.manual_seed(0)
    model = build_masksam(config).eval()
    with torch.no_grad():
        model.mask_decoder.global_classifier_tokens.weight.normal_(0, 3.0)
    return model


def test_classifier_tokens_never_change_sams_masks() -> None:
    config = preset_config("tiny", patch_size=(2, 64, 64), num_queries=2)
    decoder = _scrambled_decoder_model(config).mask_decoder.decoder
    items, channels = 4, decoder.transformer_dim
    image = torch.randn(items, channels, 16, 16)
    positions = torch.randn(1, channels, 16, 16)
    sparse = torch.randn(items, 2, channels)
    with torch.no_grad():
        alone = decoder.predict_masks(image, positions, sparse, None)
        with_tokens = decoder.predict_masks(
            image, positions, sparse, None, extra_tokens=torch.randn(items, 1, channels)
        )
        other_tokens = decoder.predict_masks(
            image, positions, sparse, None, extra_tokens=torch.randn(items, 1, channels)
        )
    torch.testing.assert_close(with_tokens.masks, alone.masks)
    torch.testing.assert_close(other_tokens.masks, alone.masks)
    assert not torch.allclose(with_tokens.extra_tokens, other_tokens.extra_tokens)  # the tokens still read


def test_untrained_dense_prompt_is_sams_box_only_prompt() -> None:
    model = build_masksam(preset_config("tiny", patch_size=(2, 64, 64), num_queries=2))
    masks = torch.randn(5, 1, *model.prompt_encoder.mask_input_size) * 10
    _, box_only = model.prompt_encoder(boxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]]))
    torch.testing.assert_close(model.dense_prompts(masks), box_only[:1].expand(5, -1, -1, -1))


def _sam_zero_shot(model, slices: torch.Tensor, pixel_boxes: torch.Tensor) -> torch.Tensor:
    """(S, K, H, W) SAM mask logits from (S, H, W) slices and (S, K, 4) inclusive pixel boxes, SAM's own pipeline."""
    backbone = _backbone_view(model)
    unit = slice_unit_range(slices[None, None])[0, 0]  # (S, H, W) as LiteMedSAM prepares a slice
    return box_prompted_logits(backbone, unit, pixel_boxes)


def _backbone_view(model):
    from masksam.backbones.sam import SamBackbone

    return SamBackbone(
        spec=BACKBONES[model.config.backbone],
        image_encoder=model.image_encoder.encoder,
        prompt_encoder=model.prompt_encoder,
        mask_decoder=model.mask_decoder.decoder,
    )


def _masksam_ground_truth_prompted(model, slices: torch.Tensor, pixel_boxes: torch.Tensor) -> torch.Tensor:
    """(S, K, H, W) mask logits of an untrained MaskSAM in ground-truth prompt mode, one patch of S slices."""
    size = slices.shape[-1]
    with torch.no_grad():
        output = model(slices[None, None], pixel_boxes / size)  # boxes (S, K, 4) normalised by the patch side
    return output.mask_logits


def _ground_truth_model(backbone: str, image_size: int, slices: int, side: int, weights=None):
    config = preset_config(
        "acdc",
        backbone=backbone,
        image_size=image_size,
        patch_size=(slices, side, side),
        num_queries=3,
        prompt_mode="ground_truth",
        prompt_generator=PromptGeneratorConfig(variant="mask_avg_box"),
    )
    torch.manual_seed(0)
    model = build_masksam(config, weights).eval()
    return model


def test_untrained_ground_truth_prompt_model_is_sam_from_the_same_boxes() -> None:
    model = _ground_truth_model("tiny", image_size=64, slices=2, side=64)
    generator = torch.Generator().manual_seed(2)
    slices = torch.randn(2, 64, 64, generator=generator) * 50 + 200
    corners = torch.randint(0, 30, (2, 3, 2), generator=generator).float()
    pixel_boxes = torch.cat([corners, corners + 20 + torch.randint(0, 10, (2, 3, 2), generator=generator)], -1)
    expected = _sam_zero_shot(model, slices, pixel_boxes)
    torch.testing.assert_close(_masksam_ground_truth_prompted(model, slices, pixel_boxes), expected, atol=1e-4, rtol=0)


ACDC = SHARED / "data" / "Dataset027_ACDC"
PARITY_CASES = ["patient001_frame01", "patient022_frame02", "patient042_frame02", "patient094_frame02"]


def _acdc_slices(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, side, side) image and label slices of PARITY_CASES (middle slices, centre-cropped/padded), S >= 20."""
    nibabel = pytest.importorskip("nibabel")
    images, labels = [], []
    for case in PARITY_CASES:
        image = torch.tensor(nibabel.load(ACDC / "imagesTr" / f"{case}_0000.nii.gz").get_fdata(), dtype=torch.float32)
        label = torch.tensor(nibabel.load(ACDC / "labelsTr" / f"{case}.nii.gz").get_fdata()).long()
        image, label = image.permute(2, 0, 1), label.permute(2, 0, 1)  # (Z, X, Y): slices first
        middle = image.shape[0] // 2
        chosen = slice(max(0, middle - 3), middle + 3)
        images.append(_centre(image[chosen], side, float(image.min())))
        labels.append(_centre(label[chosen], side, 0))
    return torch.cat(images), torch.cat(labels)


def _centre(volume: torch.Tensor, side: int, fill: float) -> torch.Tensor:
    """(S, H, W) -> (S, side, side): centre crop, then centre pad with ``fill``."""
    height, width = volume.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    volume = volume[:, top : top + side, left : left + side]
    pad_h, pad_w = side - volume.shape[1], side - volume.shape[2]
    return F.pad(volume, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


def _dice(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float(2 * (predicted & target).sum() / (predicted.sum() + target.sum()).clamp(min=1))


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [256, 128])
def test_real_lite_medsam_parity_on_acdc_slices(image_size: int) -> None:
    """Untrained MaskSAM (ground-truth prompts) vs LiteMedSAM zero-shot from the same boxes: per-class Dice
    against the reference within 0.01, on 24 real ACDC slices."""
    from masksam.backbones.weights import find_cached_weights

    weights = find_cached_weights("lite_medsam")
    if weights is None or not ACDC.is_dir():
        pytest.skip("needs `masksam weights lite_medsam` (CI fetches it) and ../shared/data/Dataset027_ACDC")
    images, labels = _acdc_slices(256)
    assert len(images) >= 20
    classes = [1, 2, 3]
    pixel_boxes, present = class_boxes(labels, classes)  # (S, 3, 4) inclusive pixel boxes
    model = _ground_truth_model("lite_medsam", image_size, slices=2, side=256, weights=weights)
    for start in range(0, len(images), 2):
        chunk = slice(start, start + 2)
        ours = _masksam_ground_truth_prompted(model, images[chunk], pixel_boxes[chunk])
        theirs = _sam_zero_shot(model, images[chunk], pixel_boxes[chunk])
        for k, class_id in enumerate(classes):
            for s in range(ours.shape[0]):
                if not present[start + s, k]:
                    continue
                reference = labels[start + s] == class_id
                difference = _dice(ours[s, k] > 0, reference) - _dice(theirs[s, k] > 0, reference)
                assert abs(difference) <= 0.01, (start + s, class_id, difference)


def _meta_vit_b(meta):
    """Meta's SAM ViT-B (segment_anything's _build_sam layout), default initialisation plus random position tables."""
    from functools import partial

    encoder = meta.ImageEncoderViT(
        depth=12,
        embed_dim=768,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=12,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=[2, 5, 8, 11],
        window_size=14,
        out_chans=256,
    )
    sam = meta.Sam(
        image_encoder=encoder,
        prompt_encoder=meta.PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=meta.MaskDecoder(
            num_multimask_outputs=3,
            transformer=meta.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in sam.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return sam


@pytest.mark.slow
def test_untrained_vit_b_masksam_matches_metas_pipeline(tmp_path) -> None:
    """Official-format ViT-B weights written here; Meta's Sam (preprocess, encoder, box prompt, decoder,
    postprocess) and an untrained MaskSAM in ground-truth prompt mode give the same mask logits for a grey
    slice prompted with the same boxes."""
    with meta_modeling() as meta:
        sam = _meta_vit_b(meta)
    weights = tmp_path / "sam_vit_b_test.pth"
    torch.save(sam.state_dict(), weights)
    model = _ground_truth_model("vit_b", image_size=1024, slices=1, side=1024, weights=weights)
    generator = torch.Generator().manual_seed(6)
    raw = torch.rand(1, 1024, 1024, generator=generator) * 900 - 100  # (S=1, H, W) any intensity range
    pixel_boxes = torch.tensor(
        [[[100.0, 200.0, 400.0, 500.0], [600.0, 50.0, 1000.0, 300.0], [0.0, 0.0, 1023.0, 1023.0]]]
    )
    ours = _masksam_ground_truth_prompted(model, raw, pixel_boxes)  # (1, 3, H, W)
    unit = slice_unit_range(raw[None, None])[0, 0, 0]  # (H, W) in [0, 1]
    with torch.no_grad():
        (theirs,) = sam(
            [{"image": (unit * 255).expand(3, -1, -1), "boxes": pixel_boxes[0], "original_size": (1024, 1024)}],
            multimask_output=False,
        )
        logits = sam.postprocess_masks(theirs["low_res_logits"], (1024, 1024), (1024, 1024))  # (3, 1, H, W)
    torch.testing.assert_close(ours[0], logits[:, 0], atol=1e-3, rtol=1e-3)
