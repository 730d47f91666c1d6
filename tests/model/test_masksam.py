"""MaskSAM assembly: output shapes for every backbone and size, frozen backbone, gradients, depth mixing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from masksam.backbones.sam import BACKBONES
from masksam.model.config import AdapterConfig, MaskSamConfig, preset_config
from masksam.model.masksam import MaskSAM, build_masksam, resize_bilinear


def tiny_config(**overrides) -> MaskSamConfig:
    return preset_config("tiny", **overrides)


def expected_shapes(config: MaskSamConfig, batch: int) -> dict[str, tuple[int, ...]]:
    slices, height, width = config.patch_size
    n, k = config.num_queries, config.num_classes
    return {
        "class_logits": (batch * slices, n, k + 1),
        "mask_logits": (batch * slices, n, height, width),
        "aux_mask_logits": (batch * slices, n, height, width),
        "aux_boxes": (batch * slices, n, 4),
        "prompt_boxes": (batch * slices, n, 4),
    }


def shapes(output) -> dict[str, tuple[int, ...]]:
    fields = [field.name for field in dataclasses.fields(output) if getattr(output, field.name) is not None]
    return {name: tuple(getattr(output, name).shape) for name in fields}


# Building ViT-L/H takes 1.5-2.5 s even on the meta device: they run with the slow tests (ViT-B stays fast).
CASES = [
    pytest.param(name, size, id=f"{name}-{size}", marks=[pytest.mark.slow] if name in ("vit_l", "vit_h") else [])
    for name, spec in BACKBONES.items()
    for size in spec.supported_sizes
]


@pytest.mark.parametrize(("backbone", "image_size"), CASES)
def test_output_shapes_for_every_backbone_and_input_size(backbone: str, image_size: int) -> None:
    """Shapes are propagated on the meta device, so even ViT-H at 1024 costs no compute."""
    config = preset_config("acdc", backbone=backbone, image_size=image_size, patch_size=(2, 96, 96), num_queries=3)
    with torch.device("meta"):
        model = build_masksam(config)
        output = model(torch.empty(2, 1, 2, 96, 96))
    assert shapes(output) == expected_shapes(config, batch=2)


@pytest.mark.parametrize(
    ("backbone", "patch_size", "image_size"),
    [
        pytest.param("tiny", (3, 64, 64), 64, id="tiny-64"),
        pytest.param("tiny", (2, 48, 40), 128, id="tiny-resized"),
        # full-size backbones: 10-15 s each here
        pytest.param("lite_medsam", (2, 256, 256), 256, id="lite_medsam-256", marks=pytest.mark.slow),
        pytest.param("vit_b", (2, 256, 256), 256, id="vit_b-256", marks=pytest.mark.slow),
    ],
)
def test_real_forward_with_several_patches_and_slices(backbone: str, patch_size, image_size: int) -> None:
    config = preset_config("tiny", backbone=backbone, patch_size=patch_size, image_size=image_size, num_queries=3)
    model = build_masksam(config).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, *patch_size))
    assert shapes(output) == expected_shapes(config, batch=2)
    assert all(torch.isfinite(getattr(output, name)).all() for name in shapes(output))
    boxes = output.prompt_boxes
    assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[..., 2:] >= boxes[..., :2]).all()


@pytest.mark.parametrize("backbone", ["tiny", "lite_medsam"])
def test_backbone_is_frozen_and_stays_in_eval_mode(backbone: str) -> None:
    model = build_masksam(tiny_config(backbone=backbone, image_size=BACKBONES[backbone].supported_sizes[0]))
    model.train()
    for module in model.frozen_modules():
        assert not any(p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    assert model.prompt_generator.training and model.mask_decoder.class_head.training


def test_backward_reaches_every_trainable_parameter_and_no_frozen_one() -> None:
    config = tiny_config()
    model = build_masksam(config).train()
    open_adapters(model)  # zero-initialised outputs would block the gradient of everything before them
    output = model(torch.randn(2, 1, *config.patch_size))
    loss = sum(getattr(output, name).float().square().mean() for name in shapes(output))
    loss.backward()
    frozen = {id(p) for m in model.frozen_modules() for p in m.parameters()}
    for name, parameter in model.named_parameters():
        if id(parameter) in frozen:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def perturbation_reach(model: MaskSAM, config: MaskSamConfig, slice_index: int) -> torch.Tensor:
    """Per output slice: how much the final mask logits move when one input slice changes."""
    torch.manual_seed(0)
    volume = torch.randn(1, 1, *config.patch_size)
    changed = volume.clone()
    changed[:, :, slice_index] += torch.randn_like(changed[:, :, slice_index])
    with torch.no_grad():
        before, after = model(volume).mask_logits, model(changed).mask_logits  # (T, N, H, W)
    return (after - before).abs().flatten(1).amax(dim=1)


def open_adapters(model: MaskSAM) -> None:
    """Give zero-initialised trainable tensors (adapter outputs, depth tables) non-zero values, as training would."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def test_without_depth_modules_slices_are_independent() -> None:
    off = AdapterConfig(
        image_adapter="vanilla", token_adapter="vanilla", encoder_depth_embedding=False, decoder_depth_embedding=False
    )
    config = tiny_config(patch_size=(3, 64, 64), adapters=off)
    model = build_masksam(config).eval()
    open_adapters(model)
    # the modality adapter and the prompt generator use 3D convs: make them slice-wise for this check
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d) and module.kernel_size[0] > 1:
            with torch.no_grad():
                centre = module.weight[:, :, module.kernel_size[0] // 2].clone()
                module.weight.zero_()
                module.weight[:, :, module.kernel_size[0] // 2] = centre
        if isinstance(module, torch.nn.InstanceNorm3d):
            module.forward = lambda x, norm=module: (
                torch.nn.functional.group_norm(
                    x.transpose(1, 2).flatten(0, 1), x.shape[1], norm.weight, norm.bias, norm.eps
                )
                .unflatten(0, (x.shape[0], x.shape[2]))
                .transpose(1, 2)
            )
    reach = perturbation_reach(model, config, slice_index=0)
    assert reach[0] > 1e-4
    assert torch.all(reach[1:] < 1e-6)


def test_depth_adapters_mix_neighbouring_slices() -> None:
    config = tiny_config(patch_size=(3, 64, 64))
    model = build_masksam(config).eval()
    open_adapters(model)
    reach = perturbation_reach(model, config, slice_index=0)
    assert torch.all(reach > 1e-4)


def test_ground_truth_prompt_mode_uses_the_given_boxes() -> None:
    config = tiny_config(prompt_mode="ground_truth")
    model = build_masksam(config).eval()
    boxes = torch.tensor([0.1, 0.2, 0.5, 0.6]).expand(2 * config.num_slices, config.num_queries, 4)
    with torch.no_grad():
        output = model(torch.randn(2, 1, *config.patch_size), boxes=boxes)
    torch.testing.assert_close(output.prompt_boxes, boxes)
    with pytest.raises(ValueError, match="needs boxes"):
        model(torch.randn(2, 1, *config.patch_size))


@pytest.mark.parametrize("variant", ["mask", "box", "mask_box", "mask_avg_box"])
@pytest.mark.parametrize(
    "adapter", ["none", "vanilla", "depth_mlp", "depth_mlp_after_up", "depth_mlp_before_down", "depth_conv"]
)
def test_every_ablation_builds_and_runs(variant: str, adapter: str) -> None:
    token_adapter = "depth_mlp" if adapter == "depth_conv" else adapter
    config = tiny_config(
        prompt_generator=dataclasses.replace(tiny_config().prompt_generator, variant=variant),
        adapters=AdapterConfig(image_adapter=adapter, token_adapter=token_adapter),
    )
    model = build_masksam(config)
    output = model(torch.randn(1, 1, *config.patch_size))
    assert shapes(output) == expected_shapes(config, batch=1)


@pytest.mark.parametrize("margin", [0.0, 0.01])
@pytest.mark.parametrize("region", ["largest_component", "all"])
def test_mask_variant_boxes_the_auxiliary_mask_and_keeps_the_learned_box_for_empty_masks(
    region: str, margin: float
) -> None:
    from masksam.model.prompt_generator import GeneratedPrompts

    generator = dataclasses.replace(
        tiny_config().prompt_generator, variant="mask", mask_box_region=region, box_margin=margin
    )
    model = build_masksam(tiny_config(prompt_generator=generator))
    batch, queries, slices, side = 1, model.config.num_queries, model.config.num_slices, model.config.image_size
    aux = torch.full((batch, queries, slices, side, side), -4.0)
    aux[0, 0, :, 8:24, 16:40] = 4.0  # query 0: an organ, rows 8..23, columns 16..39
    aux[0, 0, :, side - 1, 0] = 4.0  # and a stray pixel in the bottom-left corner
    learned = torch.rand(batch, queries, slices, 4) * 0.5
    prompts = GeneratedPrompts(aux_mask_logits=aux, boxes=learned, class_tokens=torch.zeros(batch, queries, slices, 8))
    boxes = model.prompt_boxes(prompts, None)  # (B, N, T, 4)
    outward = torch.tensor([-margin, -margin, margin, margin])
    organ = torch.tensor([16 / side, 8 / side, 40 / side, 24 / side]) + outward
    stretched = (torch.tensor([0.0, 8 / side, 40 / side, 1.0]) + outward).clamp(0.0, 1.0)  # never past the image
    torch.testing.assert_close(boxes[0, 0, 0], organ if region == "largest_component" else stretched)
    torch.testing.assert_close(boxes[0, 1:], learned[0, 1:])  # empty auxiliary masks: the learned boxes, as they are


def test_multichannel_input() -> None:
    config = tiny_config(in_channels=4)
    with torch.no_grad():
        output = build_masksam(config)(torch.randn(1, 4, *config.patch_size))
    assert shapes(output) == expected_shapes(config, batch=1)


@pytest.mark.parametrize(
    ("size", "target"),
    [
        pytest.param((8, 8), (8, 8), id="same-size"),
        pytest.param((8, 8), (12, 10), id="up"),
        pytest.param((8, 8), (4, 6), id="down"),
    ],
)
def test_resize_bilinear_skips_only_the_identity(size, target) -> None:
    maps = torch.randn(3, 2, *size)
    expected = torch.nn.functional.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_bilinear(maps, target), expected, rtol=0, atol=0)


def test_train_backbone_is_refused_on_tinyvit() -> None:
    from masksam.errors import ConfigError

    with pytest.raises(ConfigError, match="--freeze-backbone"):
        build_masksam(preset_config("acdc", backbone="lite_medsam", train_backbone=True))


def test_train_backbone_trains_sam_except_the_parts_masksam_never_reads() -> None:
    from masksam.model.masksam import UNUSED_SAM_PARTS

    model = build_masksam(preset_config("tiny", train_backbone=True))
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    assert frozen and all(name.startswith(UNUSED_SAM_PARTS) for name in frozen)
    assert model.frozen_modules() == []


def test_denoising_queries_without_mask_prompts_get_empty_ones() -> None:
    """Denoising boxes alone (no noised masks) on a mask-prompt model: D queries decoded beside the N, whatever D."""
    from masksam.model.masksam import DenoisingPrompts

    config = tiny_config()  # N = 4 queries, mask prompts on
    model = build_masksam(config).eval()
    batch, slices = 1, config.num_slices
    boxes = torch.tensor([0.2, 0.2, 0.6, 0.7]).expand(batch, 2, slices, 4)  # (B, D=2, T, 4)
    with torch.no_grad():
        output = model(torch.randn(batch, 1, *config.patch_size), denoising=DenoisingPrompts(boxes=boxes))
    assert output.denoising_mask_logits.shape == (batch * slices, 2, *config.patch_size[1:])
    assert output.mask_logits.shape[1] == config.num_queries
