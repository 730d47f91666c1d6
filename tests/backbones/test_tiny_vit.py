"""Tests of masksam.backbones.tiny_vit: LiteMedSAM's names and shapes, composition API, exact attention."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import official_shapes as shared_official_shapes
from helpers import state_dict_from_shapes

from masksam.backbones.checkpoint import load_strict, read_state_dict
from masksam.backbones.tiny_vit import Conv2dBN, TinyViT, TinyViTBlock, relative_offset_indices
from masksam.backbones.weights import find_cached_weights
from masksam.errors import CheckpointError

PREFIX = "image_encoder."

# A small TinyViT that exercises the same code paths (padding into windows, a stride-1 last merge).
SMALL = {
    "img_size": 32,
    "embed_dims": (8, 16, 24, 32),
    "depths": (1, 2, 2, 1),
    "num_heads": (1, 2, 3, 4),
    "window_sizes": (7, 7, 7, 5),
    "out_chans": 16,
}


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, list[int]]:
    keys = shared_official_shapes("lite_medsam_state_dict_shapes.json")
    return {key[len(PREFIX) :]: shape for key, shape in keys.items() if key.startswith(PREFIX)}


def random_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    return state_dict_from_shapes(shapes, seed, scale=0.2)


def randomized(model: TinyViT, seed: int = 0) -> TinyViT:
    """Random weights everywhere (fresh TinyViT has zero biases and zero-initialised BN gammas)."""
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    model.load_state_dict(random_state_dict(shapes, seed))
    return model.eval()


def test_state_dict_equals_lite_medsam_image_encoder(official_shapes):
    ours = {key: list(value.shape) for key, value in TinyViT().state_dict().items()}
    assert len(ours) == 298
    assert ours == official_shapes


def test_random_official_state_dict_loads_strictly(official_shapes):
    model = TinyViT()
    state = random_state_dict(official_shapes)
    load_strict(model, state, source="random.pth", backbone="lite_medsam")
    assert torch.equal(
        model.layers[2].blocks[3].attn.attention_biases, state["layers.2.blocks.3.attn.attention_biases"]
    )


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(lambda s: s.pop("neck.3.bias"), "1 missing: neck.3.bias", id="missing-key"),
        pytest.param(
            lambda s: s.__setitem__("layers.1.blocks.0.attn.attention_biases", torch.zeros(4, 50)),
            "wrong shape: layers.1.blocks.0.attn.attention_biases (4, 50) != (4, 49)",
            id="wrong-shape",
        ),
        pytest.param(lambda s: s.__setitem__("head.weight", torch.zeros(1)), "1 unexpected: head.weight", id="extra"),
    ],
)
def test_tampered_state_dict_is_rejected(official_shapes, tamper, expected):
    state = random_state_dict(official_shapes)
    tamper(state)
    with pytest.raises(CheckpointError, match="random.pth: not a 'lite_medsam' checkpoint") as raised:
        load_strict(TinyViT(), state, source="random.pth", backbone="lite_medsam")
    assert expected in str(raised.value)


def test_lite_medsam_output_shapes_batch_2():
    model = TinyViT().to("meta")  # shapes only: the full-size forward pass is checked in the slow test
    assert model.stage_channels == (64, 128, 160, 320)
    assert [layer.input_resolution for layer in model.layers] == [(256, 256), (128, 128), (64, 64), (64, 64)]
    assert model.image_embedding_size == (64, 64)
    embedding, stages = model.forward_with_stages(torch.empty(2, 3, 256, 256, device="meta"))
    assert embedding.shape == (2, 256, 64, 64)
    assert [tuple(stage.shape) for stage in stages] == [
        (2, 64, 256, 256),
        (2, 128, 128, 128),
        (2, 160, 64, 64),
        (2, 320, 64, 64),
    ]
    assert model(torch.empty(2, 3, 256, 256, device="meta")).shape == (2, 256, 64, 64)


def test_small_model_forward_shapes_and_values():
    model = randomized(TinyViT(**SMALL))
    embedding, stages = model.forward_with_stages(torch.randn(2, 3, 32, 32))
    assert embedding.shape == (2, 16, 8, 8)
    assert [tuple(stage.shape) for stage in stages] == [
        (2, 8, 32, 32),
        (2, 16, 16, 16),
        (2, 24, 8, 8),
        (2, 32, 8, 8),
    ]
    assert torch.isfinite(embedding).all()


def test_stage_zero_runs_in_channels_last_memory():
    """Kept for speed: stage 0's depth-wise convolutions are 2-3x faster on CPU in channels-last layout."""
    model = randomized(TinyViT(**SMALL))
    maps = model.patch_embed(torch.randn(2, 3, 32, 32))
    assert maps.is_contiguous(memory_format=torch.channels_last)
    assert model.layers[0].forward_blocks(maps).is_contiguous(memory_format=torch.channels_last)


def test_rejects_wrong_input_size():
    with pytest.raises(ValueError, match=r"expects \(B, C, 32, 32\)"):
        TinyViT(**SMALL)(torch.randn(1, 3, 64, 64))


def compose(model: TinyViT, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder written with the public composition API only, as the MaskSAM wrapper will."""
    stages = []
    x = model.patch_embed(images)  # (B, C0, H, W)
    first = model.layers[0]
    for block in first.blocks:
        x = block(x)
    stages.append(x)
    x = first.downsample(x)  # (B, L1, C1)
    for layer in model.layers[1:]:
        for block in layer.blocks:
            y = block.local_conv_step(x + block.attention_branch(x))
            x = y + block.mlp(y)
        height, width = layer.input_resolution
        stages.append(x.transpose(1, 2).reshape(x.shape[0], -1, height, width))
        if layer.downsample is not None:
            x = layer.downsample(x)
    return model.neck(stages[-1]), stages


def test_forward_equals_composition_of_api_methods():
    model = randomized(TinyViT(**SMALL))
    images = torch.randn(2, 3, 32, 32)
    expected_embedding, expected_stages = compose(model, images)
    embedding, stages = model.forward_with_stages(images)
    torch.testing.assert_close(embedding, expected_embedding, rtol=0, atol=1e-6)
    for stage, expected in zip(stages, expected_stages, strict=True):
        torch.testing.assert_close(stage, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(images), embedding, rtol=0, atol=0)


def tinyvit_offset_indices(rows: int, cols: int) -> torch.Tensor:
    """TinyViT's definition: offsets numbered by first appearance over row-major pairs of positions."""
    points = list(itertools.product(range(rows), range(cols)))
    offsets: dict[tuple[int, int], int] = {}
    indices = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            indices.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(indices).view(len(points), len(points))


@pytest.mark.parametrize(("rows", "cols"), [(7, 7), (14, 14), (3, 5)])
def test_relative_offset_indices_match_tinyvit_numbering(rows, cols):
    assert torch.equal(relative_offset_indices((rows, cols)), tinyvit_offset_indices(rows, cols))


def explicit_attention_branch(block: TinyViTBlock, x: torch.Tensor) -> torch.Tensor:
    """Reference: zero-pad, loop over windows, explicit softmax(q k^T / sqrt(d) + bias) v, crop."""
    attn, ws = block.attn, block.window_size
    batch, _, channels = x.shape
    height, width = block.resolution
    grid = x.reshape(batch, height, width, channels)
    grid = F.pad(grid, (0, 0, 0, (-width) % ws, 0, (-height) % ws))
    out = torch.zeros_like(grid)
    bias = attn.attention_biases[:, tinyvit_offset_indices(ws, ws)]  # (heads, N, N)
    heads, key_dim = attn.num_heads, attn.key_dim
    for top in range(0, grid.shape[1], ws):
        for left in range(0, grid.shape[2], ws):
            window = grid[:, top : top + ws, left : left + ws].reshape(batch, ws * ws, channels)
            qkv = attn.qkv(attn.norm(window)).view(batch, ws * ws, heads, 3, key_dim)
            q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))  # (B, heads, N, kd)
            weights = torch.softmax(q @ k.transpose(-2, -1) / key_dim**0.5 + bias, dim=-1)
            y = attn.proj((weights @ v).transpose(1, 2).reshape(batch, ws * ws, heads * key_dim))
            out[:, top : top + ws, left : left + ws] = y.view(batch, ws, ws, channels)
    return out[:, :height, :width].reshape(batch, height * width, channels)


@pytest.mark.parametrize(
    ("resolution", "window_size"),
    [
        pytest.param((16, 16), 7, id="padded"),
        pytest.param((14, 14), 14, id="one-window"),
        pytest.param((9, 20), 7, id="non-square"),
        pytest.param((8, 8), 14, id="window-larger-than-grid"),
    ],
)
def test_attention_branch_equals_explicit_softmax(resolution, window_size):
    torch.manual_seed(0)
    block = TinyViTBlock(dim=24, resolution=resolution, num_heads=3, window_size=window_size).eval()
    with torch.no_grad():
        block.attn.attention_biases.normal_(0, 1.0)
        block.attn.norm.weight.normal_(1, 0.3)
        block.attn.norm.bias.normal_(0, 0.3)
    x = torch.randn(2, resolution[0] * resolution[1], 24)
    with torch.no_grad():
        torch.testing.assert_close(block.attention_branch(x), explicit_attention_branch(block, x), rtol=0, atol=1e-5)


def test_block_forward_equals_its_steps_and_keeps_gradients():
    block = TinyViTBlock(dim=16, resolution=(10, 10), num_heads=2, window_size=7)
    x = torch.randn(3, 100, 16, requires_grad=True)
    y = block.local_conv_step(x + block.attention_branch(x))
    expected = y + block.mlp(y)
    out = block(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    assert x.grad is not None and block.attn.attention_biases.grad is not None
    assert block.dim == 16 and block.resolution == (10, 10)


def random_batchnorm(layer: Conv2dBN, seed: int) -> Conv2dBN:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in (layer.c.weight, layer.bn.weight, layer.bn.bias, layer.bn.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        layer.bn.running_var.copy_(torch.rand(layer.bn.running_var.shape, generator=generator) + 0.1)
    return layer


@pytest.mark.parametrize(
    ("in_chans", "out_chans", "options"),
    [
        pytest.param(6, 10, {}, id="1x1"),
        pytest.param(8, 8, {"kernel_size": 3, "padding": 1, "groups": 8}, id="depthwise-3x3"),
        pytest.param(8, 8, {"kernel_size": 3, "stride": 2, "padding": 1, "groups": 8}, id="depthwise-stride-2"),
        pytest.param(4, 6, {"kernel_size": 3, "padding": 1}, id="dense-3x3"),
    ],
)
def test_folded_conv_bn_equals_convolution_then_batchnorm(in_chans, out_chans, options):
    layer = random_batchnorm(Conv2dBN(in_chans, out_chans, **options), seed=0).eval()
    x = torch.randn(2, in_chans, 9, 11, requires_grad=True)
    expected = layer.bn(layer.c(x))
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    (grad,) = torch.autograd.grad(layer(x).square().sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-4)
    layer.train()  # batch statistics: nothing is folded, and the running statistics move
    torch.testing.assert_close(layer(x), F.batch_norm(layer.c(x), None, None, layer.bn.weight, layer.bn.bias, True))


def test_folding_leaves_the_state_dict_untouched():
    """Names, shapes and values saved after a forward pass are the loaded ones (strict round trip)."""
    model = randomized(TinyViT(**SMALL))
    loaded = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    saved = model.state_dict()
    assert list(saved) == list(loaded)
    assert all(torch.equal(saved[key], loaded[key]) for key in loaded)
    load_strict(TinyViT(**SMALL), saved, source="round trip", backbone="lite_medsam")


@pytest.mark.slow
def test_real_lite_medsam_weights_load_and_run():
    path = find_cached_weights("lite_medsam")
    if path is None:
        pytest.skip("lite_medsam.pth not cached; run `masksam weights lite_medsam`")
    state = read_state_dict(path)
    encoder_state = {key[len(PREFIX) :]: value for key, value in state.items() if key.startswith(PREFIX)}
    model = TinyViT()
    load_strict(model, encoder_state, source=str(path), backbone="lite_medsam")
    with torch.inference_mode():
        embedding = model.eval()(torch.rand(1, 3, 256, 256))
    assert embedding.shape == (1, 256, 64, 64)
    assert torch.isfinite(embedding).all()


def test_window_attention_past_the_cuda_batch_limit_runs_in_chunks(monkeypatch) -> None:
    """Before torch 2.8 CUDA's attention fails past 65,535 windows in one call; above the limit the windows go in
    chunks, with the same result (a limit of 3 stands in for CUDA's here)."""
    from masksam.backbones import tiny_vit

    torch.manual_seed(0)
    attention = tiny_vit.Attention(dim=16, key_dim=8, num_heads=2, window_resolution=(3, 3))
    with torch.no_grad():
        attention.attention_biases.normal_()
    windows = torch.randn(8, 9, 16)  # (B_w, N, dim)
    whole = attention(windows)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counted(q, *args, **kwargs):
        calls.append(len(q))
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(tiny_vit, "sdpa_batch_limit", lambda q: 3)
    monkeypatch.setattr(tiny_vit.F, "scaled_dot_product_attention", counted)
    torch.testing.assert_close(attention(windows), whole)
    assert calls == [3, 3, 2]
