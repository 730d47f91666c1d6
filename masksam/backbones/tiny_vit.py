"""TinyViT image encoder of LiteMedSAM, with LiteMedSAM's parameter names so `lite_medsam.pth` loads strictly.

TinyViT (Wu et al., 2022) as adapted by MobileSAM and then LiteMedSAM: a patch embedding, one stage of MBConv
blocks, three stages of windowed-attention blocks with a depth-wise "local" convolution between attention and
MLP, and SAM's 256-channel neck. LiteMedSAM's patch embedding is two 1×1 Conv+BN layers, so nothing is
downsampled before stage 0; a 256×256 image gives stage maps of 256², 128², 64² and 64² and a (256, 64, 64)
image embedding.

How tensors flow (B images, 256×256 input, LiteMedSAM sizes):

    image               (B, 3, 256, 256)
    patch_embed      -> (B, 64, 256, 256)       maps
    layers[0] blocks -> (B, 64, 256, 256)       maps (ConvLayer: MBConv blocks)
    layers[0].downsample -> (B, 128*128, 128)   tokens (B, L, C), L = H*W in row-major order
    layers[1] blocks -> (B, 128*128, 128)       tokens (BasicLayer: TinyViT blocks)
    layers[1].downsample -> (B, 64*64, 160)
    layers[2] blocks -> (B, 64*64, 160)
    layers[2].downsample -> (B, 64*64, 320)     stride 1 into the last stage, as in MobileSAM
    layers[3] blocks -> (B, 64*64, 320)
    neck             -> (B, 256, 64, 64)        maps

The MaskSAM wrapper composes adapters around the blocks: `TinyViTBlock.forward` is written with the public
steps `attention_branch`, `local_conv_step` and `mlp` so a wrapper can call them in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from masksam.backbones.common import LayerNorm2d, attention


class Conv2dBN(nn.Module):
    """Convolution without bias followed by BatchNorm2d (`c`, `bn` as in TinyViT's `Conv2d_BN`).

    In eval mode (always, for the frozen backbone) the BatchNorm is an affine map per output channel, so it
    is folded into the convolution on every call: one convolution with a scaled weight and a bias instead
    of a convolution and a full pass of BatchNorm over its output. The weights are stored unfolded under
    the official names (loading and saving are unchanged); folding them costs microseconds.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (C_out, C_in/groups, k, k) and bias (C_out,) of the convolution equal to `c` then eval `bn`."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
        return self.c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        if self.bn.training:  # batch statistics: nothing to fold
            return self.bn(self.c(x))
        weight, bias = self.folded()
        conv = self.c
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """LiteMedSAM's patch embedding: 1×1 Conv+BN to embed_dim/2, GELU, 1×1 Conv+BN (no downsampling).

    The output is in channels-last memory (same shape): stage 0's convolutions keep that layout and run
    faster in it on CPU (the depth-wise 3×3 about 2.5x), and the tokens of the later stages are a view of it.
    """

    def __init__(self, *, in_chans: int = 3, embed_dim: int = 64) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, embed_dim, H, W), channels-last in memory."""
        return self.seq(x.contiguous(memory_format=torch.channels_last))


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, 3×3 depth-wise, 1×1 project, residual, then GELU."""

    def __init__(self, *, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        # Zero-initialised last BN: a fresh block starts as GELU(identity), as in TinyViT.
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.act1(self.conv1(x))  # (B, hidden, H, W)
        y = self.act2(self.conv2(y))
        y = self.conv3(y)  # (B, C, H, W)
        return self.act3(x + y)


def downsampled_resolution(resolution: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output size of a 3×3 convolution with padding 1 and the given stride (ceil division)."""
    return (-(-resolution[0] // stride), -(-resolution[1] // stride))


class PatchMerging(nn.Module):
    """Change of width (and resolution) between stages: 1×1 Conv+BN, GELU, 3×3 depth-wise Conv+BN, GELU, 1×1.

    Takes tokens (B, H*W, C) or maps (B, C, H, W) at `input_resolution`; returns tokens (B, H'*W', out_dim).
    """

    def __init__(self, *, input_resolution: tuple[int, int], dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_resolution = downsampled_resolution(input_resolution, stride)
        self.dim = dim
        self.out_dim = out_dim
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*W, dim) or (B, dim, H, W) -> (B, H'*W', out_dim)."""
        if x.ndim == 3:
            x = tokens_to_map(x, self.input_resolution)  # (B, dim, H, W)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))  # (B, out_dim, H', W')
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # (B, H'*W', out_dim)


def tokens_to_map(x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens in row-major order -> (B, C, H, W) view (no copy)."""
    batch, length, channels = x.shape
    height, width = resolution
    if length != height * width:
        raise ValueError(f"expected {height}*{width}={height * width} tokens, got {length}")
    return x.transpose(1, 2).reshape(batch, channels, height, width)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) view (no copy)."""
    return x.flatten(2).transpose(1, 2)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a (B, H, W, C) map into non-overlapping windows, zero-padding bottom/right to a multiple.

    Returns:
        windows: (B*nH*nW, window_size*window_size, C), windows in row-major order per image.
        padded: (pH, pW), the padded size to give back to `window_unpartition`.
    """
    batch, height, width, channels = x.shape
    pad_bottom = (window_size - height % window_size) % window_size
    pad_right = (window_size - width % window_size) % window_size
    if pad_bottom or pad_right:
        x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))  # (B, pH, pW, C)
    padded_h, padded_w = height + pad_bottom, width + pad_right
    n_h, n_w = padded_h // window_size, padded_w // window_size
    x = x.reshape(batch, n_h, window_size, n_w, window_size, channels).transpose(2, 3)  # (B, nH, nW, ws, ws, C)
    return x.reshape(batch * n_h * n_w, window_size * window_size, channels), (padded_h, padded_w)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded: tuple[int, int], resolution: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nH*nW, ws*ws, C) -> (B, H, W, C), padding removed."""
    padded_h, padded_w = padded
    n_h, n_w = padded_h // window_size, padded_w // window_size
    channels = windows.shape[-1]
    batch = windows.shape[0] // (n_h * n_w)
    x = windows.view(batch, n_h, n_w, window_size, window_size, channels).transpose(2, 3)  # (B, nH, ws, nW, ws, C)
    x = x.reshape(batch, padded_h, padded_w, channels)
    height, width = resolution
    if padded_h != height or padded_w != width:
        x = x[:, :height, :width]
    return x


def relative_offset_indices(resolution: tuple[int, int]) -> torch.Tensor:
    """(N, N) index of the bias shared by every pair of positions with the same |Δrow|, |Δcol| in a window.

    N = rows*cols. Offsets are numbered in order of first appearance when pairs are enumerated row-major
    (TinyViT's numbering), which for a full grid is |Δrow| * cols + |Δcol|.
    """
    rows, cols = resolution
    row = torch.arange(rows).repeat_interleave(cols)  # (N,) row of each position, row-major
    col = torch.arange(cols).repeat(rows)  # (N,)
    d_row = (row[:, None] - row[None, :]).abs()  # (N, N)
    d_col = (col[:, None] - col[None, :]).abs()
    return d_row * cols + d_col


# Before torch 2.8 the CUDA attention kernels launch one grid row per batch entry and fail ("invalid configuration
# argument") past CUDA's 65,535 grid rows: large --windows-per-batch on big patches gives that many windows.
CUDA_SDPA_MAX_BATCH = 65_535
_SDPA_BATCH_LIMITED = tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 8)


def sdpa_batch_limit(q: torch.Tensor) -> int:
    """The most windows one attention call may take for ``q``'s device on this torch (chunked above it)."""
    return CUDA_SDPA_MAX_BATCH if q.is_cuda and _SDPA_BATCH_LIMITED else q.shape[0]


class Attention(nn.Module):
    """Multi-head self-attention in one window: LayerNorm first, learnable relative-position bias.

    The qkv output is laid out head by head, each head's slice being [q | k | v] (SAM's is [all q | all k |
    all v]); the bias (heads, number of offsets) is gathered through the non-persistent `attention_bias_idxs`.
    """

    def __init__(self, *, dim: int, key_dim: int, num_heads: int, window_resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * key_dim * num_heads)
        self.proj = nn.Linear(key_dim * num_heads, dim)
        rows, cols = window_resolution
        # One bias per head and per distinct (|Δrow|, |Δcol|) offset: rows*cols of them.
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, rows * cols))
        self.register_buffer("attention_bias_idxs", relative_offset_indices(window_resolution), persistent=False)

    def bias(self) -> torch.Tensor:
        """The (heads, N, N) additive attention bias."""
        # Gathered on every call (cheap) rather than cached, so it can never go stale after load_state_dict.
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B_w, N, dim) windows of N tokens -> (B_w, N, dim)."""
        batch, length, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, length, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)  # each (B_w, heads, N, key_dim)
        # Equal to softmax(q k^T * scale + bias) v within float32 rounding (see tests). The bias is given as
        # (1, heads, N, N): with a 4-D mask PyTorch's CPU flash kernel runs (3-4x faster than the math path
        # it falls back to for a 3-D mask).
        bias = self.bias().unsqueeze(0)  # (1, heads, N, N); attention() casts it to what its kernel runs in
        limit = sdpa_batch_limit(q)
        if batch <= limit:
            out = attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B_w, heads, N, kd)
        else:
            parts = zip(q.split(limit), k.split(limit), v.split(limit), strict=True)
            out = torch.cat([attention(*part, attn_mask=bias, scale=self.scale) for part in parts])
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.key_dim)  # (B_w, N, heads*kd)
        return self.proj(out)


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear (TinyViT's MLP has its norm inside)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depth-wise local conv, MLP (residual) on (B, H*W, C) tokens.

    `forward(x)` is exactly `y = local_conv_step(x + attention_branch(x)); y + mlp(y)`; adapters may be
    inserted between these steps by a wrapper.
    """

    def __init__(
        self,
        *,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
    ) -> None:
        """
        Args:
            dim: token width C.
            resolution: (H, W) of the token grid this block runs on.
            num_heads: attention heads; must divide `dim` (key_dim = dim // num_heads).
            window_size: side of the square attention windows; the grid is zero-padded to a multiple.
            mlp_ratio: MLP hidden width / dim.
            local_conv_size: kernel of the depth-wise convolution between attention and MLP.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.resolution = resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn = Attention(
            dim=dim,
            key_dim=dim // num_heads,
            num_heads=num_heads,
            window_resolution=(window_size, window_size),
        )
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed attention output, not yet added to the residual: (B, H*W, C) -> (B, H*W, C).

        Padding tokens are zeros before the attention's LayerNorm and, as in the reference TinyViT, are not
        masked out as keys; this keeps the pretrained weights' behaviour on grids that are not a multiple
        of the window (128 and 64 with windows 7 and 14).
        """
        batch, length, channels = x.shape
        height, width = self.resolution
        windows, padded = window_partition(x.reshape(batch, height, width, channels), self.window_size)
        windows = self.attn(windows)  # (B*nW, ws*ws, C)
        x = window_unpartition(windows, self.window_size, padded, self.resolution)  # (B, H, W, C)
        return x.reshape(batch, length, channels)

    def local_conv_step(self, x: torch.Tensor) -> torch.Tensor:
        """Depth-wise Conv+BN on the (B, C, H, W) view of the tokens: (B, H*W, C) -> (B, H*W, C)."""
        return map_to_tokens(self.local_conv(tokens_to_map(x, self.resolution)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*W, C) -> (B, H*W, C)."""
        x = self.local_conv_step(x + self.attention_branch(x))
        return x + self.mlp(x)


def make_downsample(
    input_resolution: tuple[int, int], dim: int, out_dim: int | None, stride: int
) -> PatchMerging | None:
    """The PatchMerging that ends a stage, or None for the last stage (no `out_dim`)."""
    if out_dim is None:
        return None
    return PatchMerging(input_resolution=input_resolution, dim=dim, out_dim=out_dim, stride=stride)


class Stage(nn.Module):
    """A sequence of `blocks` followed by an optional `downsample`; `forward_blocks` runs only the blocks."""

    blocks: nn.ModuleList

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Same layout in and out: maps (B, C, H, W) for stage 0, tokens (B, H*W, C) for the others."""
        for block in self.blocks:
            x = block(x)
        return x


class ConvLayer(Stage):
    """Stage 0: MBConv blocks on maps, then `downsample` (PatchMerging, or None for a last stage).

    Takes maps (B, C, H, W); `forward_blocks` returns maps (B, C, H, W); `forward` returns tokens
    (B, H'*W', C') after the downsample (or (B, H*W, C) without one).
    """

    def __init__(
        self,
        *,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        expand_ratio: float = 4.0,
        out_dim: int | None = None,
        downsample_stride: int = 2,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.blocks = nn.ModuleList([MBConv(dim=dim, expand_ratio=expand_ratio) for _ in range(depth)])
        self.downsample = make_downsample(input_resolution, dim, out_dim, downsample_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H'*W', C') tokens."""
        x = self.forward_blocks(x)
        return map_to_tokens(x) if self.downsample is None else self.downsample(x)


class BasicLayer(Stage):
    """Stages 1-3: TinyViT blocks on tokens, then `downsample` (PatchMerging, or None for the last stage).

    Takes tokens (B, H*W, C); `forward_blocks` returns (B, H*W, C); `forward` returns (B, H'*W', C').
    """

    def __init__(
        self,
        *,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_dim: int | None = None,
        downsample_stride: int = 2,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.blocks = nn.ModuleList(
            [
                TinyViTBlock(
                    dim=dim,
                    resolution=input_resolution,
                    num_heads=num_heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    local_conv_size=local_conv_size,
                )
                for _ in range(depth)
            ]
        )
        self.downsample = make_downsample(input_resolution, dim, out_dim, downsample_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*W, C) -> (B, H'*W', C')."""
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """LiteMedSAM's TinyViT image encoder: (B, 3, S, S) images -> (B, 256, S/4, S/4) image embeddings."""

    def __init__(
        self,
        *,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        downsample_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        """
        Args:
            img_size: side of the square input image (LiteMedSAM: 256); the stage grids are fixed by it.
            in_chans: image channels.
            embed_dims: width of each stage; stage 0 is convolutional, the others are attention stages.
            depths: blocks per stage.
            num_heads: attention heads per stage (entry 0 unused: stage 0 has no attention).
            window_sizes: attention window side per stage (entry 0 unused).
            downsample_strides: stride of the PatchMerging after stage i, i < len(embed_dims) - 1 (MobileSAM
                and LiteMedSAM keep the resolution into the 320-wide last stage).
            mlp_ratio: MLP hidden width / width in the attention stages.
            mbconv_expand_ratio: hidden width / width in the MBConv blocks of stage 0.
            local_conv_size: kernel of the depth-wise convolution inside each TinyViT block.
            out_chans: width of the neck's output (SAM's image embedding).
        """
        super().__init__()
        num_stages = len(embed_dims)
        lengths = {len(depths), len(num_heads), len(window_sizes), len(downsample_strides) + 1}
        if lengths != {num_stages} or num_stages < 2:
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes need one entry per stage (at least 2) and "
                "downsample_strides one fewer"
            )
        self.img_size = img_size
        self.out_chans = out_chans
        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dims[0])

        resolutions = [(img_size, img_size)]
        for stride in downsample_strides:
            resolutions.append(downsampled_resolution(resolutions[-1], stride))
        self.stage_resolutions: tuple[tuple[int, int], ...] = tuple(resolutions)

        self.layers = nn.ModuleList()
        for i in range(num_stages):
            last = i == num_stages - 1
            common = {
                "dim": embed_dims[i],
                "input_resolution": resolutions[i],
                "depth": depths[i],
                "out_dim": None if last else embed_dims[i + 1],
                "downsample_stride": 1 if last else downsample_strides[i],
            }
            if i == 0:
                self.layers.append(ConvLayer(expand_ratio=mbconv_expand_ratio, **common))
            else:
                self.layers.append(
                    BasicLayer(
                        num_heads=num_heads[i],
                        window_size=window_sizes[i],
                        mlp_ratio=mlp_ratio,
                        local_conv_size=local_conv_size,
                        **common,
                    )
                )
        self._stage_channels = tuple(embed_dims)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Width of each stage's output map (LiteMedSAM: 64, 128, 160, 320)."""
        return self._stage_channels

    @property
    def image_embedding_size(self) -> tuple[int, int]:
        """(h, w) of the neck output (LiteMedSAM: 64×64 for a 256 input)."""
        return self.stage_resolutions[-1]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"TinyViT expects (B, C, {self.img_size}, {self.img_size}) images, got {tuple(x.shape)}; "
                "resize the slices to the backbone's input size"
            )

    def _run(self, x: torch.Tensor, keep_stages: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        stages: list[torch.Tensor] = []
        x = self.patch_embed(x)  # (B, C0, S, S)
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x)  # stage 0: (B, C0, S, S) maps; others: (B, H_i*W_i, C_i) tokens
            stage_map = x if i == 0 else tokens_to_map(x, layer.input_resolution)  # (B, C_i, H_i, W_i)
            if keep_stages:
                stages.append(stage_map)
            if layer.downsample is not None:
                x = layer.downsample(x)  # (B, H_{i+1}*W_{i+1}, C_{i+1})
        embedding = self.neck(stage_map)  # (B, out_chans, h, w)
        return embedding, stages

    def forward_with_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            x: (B, in_chans, img_size, img_size) images.

        Returns:
            The image embedding (B, out_chans, h, w), and each stage's output before its downsample as a
            (B, C_i, H_i, W_i) map (LiteMedSAM, 256 input: 64×256², 128×128², 160×64², 320×64²).
        """
        return self._run(x, keep_stages=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, img_size, img_size) images -> (B, out_chans, h, w) image embeddings."""
        return self._run(x, keep_stages=False)[0]


def _init_weights(module: nn.Module) -> None:
    # TinyViT's initialisation for a randomly initialised encoder (tests, `tiny` experiments).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
