"""Strict loading of official SAM / LiteMedSAM files into our backbones, and the errors for bad files."""

from __future__ import annotations

import pytest
import torch
from helpers import official_shapes, state_dict_from_shapes

from masksam.backbones.sam import BACKBONES, build_backbone, load_backbone_weights
from masksam.errors import CheckpointError, ConfigError

OFFICIAL = {"vit_b": "sam_vit_b_state_dict_shapes.json", "lite_medsam": "lite_medsam_state_dict_shapes.json"}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_keys_and_shapes_equal_the_official_checkpoint(name: str) -> None:
    expected = official_shapes(OFFICIAL[name])
    ours = {key: list(tensor.shape) for key, tensor in build_backbone(name).state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize(
    "name",
    # vit_b: 4-5 s, a 90M-parameter file; lite_medsam: about 5 s, a full-size build and a 40 MB file
    [pytest.param("vit_b", marks=pytest.mark.slow), pytest.param("lite_medsam", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("image_size", [None, 256])
def test_official_file_loads_strictly_at_every_input_size(tmp_path, name: str, image_size: int | None) -> None:
    state = state_dict_from_shapes(official_shapes(OFFICIAL[name]))
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    backbone = load_backbone_weights(build_backbone(name, image_size=image_size), path)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    assert not any(p.requires_grad for p in backbone.parameters())


def test_wrapped_state_dict_is_unwrapped(tmp_path) -> None:
    shapes = {key: list(value.shape) for key, value in build_backbone("tiny").state_dict().items()}
    state = state_dict_from_shapes(shapes, seed=3)  # values no fresh build has
    path = tmp_path / "wrapped.pth"
    torch.save({"model": state, "epoch": 3}, path)
    loaded = load_backbone_weights(build_backbone("tiny"), path).state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(
            lambda s: s.pop("mask_decoder.iou_token.weight"),
            "1 missing: mask_decoder.iou_token.weight",
            id="missing",
        ),
        pytest.param(
            lambda s: s.__setitem__("extra.weight", torch.zeros(1)),
            "1 unexpected: extra.weight",
            id="unexpected",
        ),
        pytest.param(
            lambda s: s.__setitem__("mask_decoder.iou_token.weight", torch.zeros(1, 7)),
            "wrong shape: mask_decoder.iou_token.weight (1, 7) != (1, 64)",
            id="shape",
        ),
    ],
)
def test_tampered_file_fails_with_one_line(tmp_path, tamper, expected: str) -> None:
    state = build_backbone("tiny").state_dict()
    tamper(state)
    path = tmp_path / "tampered.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(build_backbone("tiny"), path)
    message = str(error.value)
    assert expected in message and str(path) in message and "'tiny'" in message and "\n" not in message


@pytest.mark.slow  # builds full-size LiteMedSAM and ViT-B: about 5 s
def test_checkpoint_of_another_backbone_is_named(tmp_path) -> None:
    path = tmp_path / "lite.pth"
    torch.save(build_backbone("lite_medsam").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"not a 'vit_b' checkpoint \(\d+ missing: image_encoder\.pos_embed"):
        load_backbone_weights(build_backbone("vit_b", image_size=256), path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "no such weights file", id="absent"),
        pytest.param(b"", "cannot be read", id="empty"),
        pytest.param(b"PK\x03\x04 truncated zip", "cannot be read", id="truncated"),
    ],
)
def test_unreadable_file(tmp_path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "broken.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_backbone_weights(build_backbone("tiny"), path)


def test_file_without_tensors(tmp_path) -> None:
    path = tmp_path / "numbers.pth"
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_backbone_weights(build_backbone("tiny"), path)


def test_unknown_backbone_and_size() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'vit_x'"):
        build_backbone("vit_x")
    with pytest.raises(ConfigError, match="does not run at 300"):
        build_backbone("vit_b", image_size=300)


def test_backbone_stays_in_eval_mode() -> None:
    backbone = build_backbone("lite_medsam")
    backbone.train()
    assert not any(module.training for module in backbone.modules())


@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_large_vits_have_the_official_layout(name: str) -> None:
    spec = BACKBONES[name]
    with torch.device("meta"):
        backbone = build_backbone(name)
    state = backbone.state_dict()
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, spec.embed_dim)
    assert len(backbone.image_encoder.blocks) == spec.depth
    last_global = spec.global_attn_indexes[-1]
    assert state[f"image_encoder.blocks.{last_global}.attn.rel_pos_h"].shape == (
        127,
        spec.embed_dim // spec.num_heads,
    )
    assert state["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, spec.embed_dim // spec.num_heads)
