"""A from-scratch U-Net for the same patches as MaskSAM: config, network (MONAI's DynUNet) and Dice + CE loss.

Two configurations, named as nnU-Net names them (``UNetConfig.configuration``):

``3d_fullres``: 3-D convolutions over the plans' patch, planned by :func:`plan_levels` from the plans' patch
size and target spacing: two 3-D convolutions per level (InstanceNorm, LeakyReLU 0.01), 32 channels doubling
per level up to 320, stride-2 downsampling only along axes that are at least ``2 * min_feature_size`` voxels
long and whose spacing is within a factor 2 of the finest poolable one, and a kernel of 1 along an axis while
its spacing is more than twice the finest (thick slices). With ACDC's 4×256×256 patch the slice axis is never
downsampled (4 < 8), so the network pools in-plane only, as nnU-Net does for thin patches.

``2d``: nnU-Net v2's 2-D configuration (its ``ExperimentPlanner``, rules re-implemented here): single-slice
patches whose in-plane size follows the median in-plane shape, padded to a multiple of the total downsampling
(:func:`plan_levels_2d`); 2-D convolutions, 32 channels doubling per stage up to 512; as many stages as keep
the bottleneck at least 4 pixels wide; deep supervision; batch Dice; and the batch nnU-Net plans for an 8 GB
GPU (:func:`nnunet_2d_batch_size`). The network folds the patch's slices into the batch, so it accepts the
loader's (B, C, T, H, W) patches for any T and predicts through the same 3-D sliding window with 1-slice
windows. For ACDC (median in-plane 216×256): patch 224×256, six stages 32-512, batch 56 on an 8 GB GPU.

MONAI is an optional dependency (``pip install 'masksam[baselines]'``); it is imported only when a network or
loss is built, and its absence is a one-line :class:`~masksam.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from masksam.data.plans import Plans
from masksam.errors import ConfigError

Triple = tuple[int, int, int]
Pair = tuple[int, int]

CONFIGURATIONS = ("2d", "3d_fullres")
# Feature maps are never downsampled below this many voxels along an axis (nnU-Net's minimum edge length).
MIN_FEATURE_SIZE = 4
# An axis whose spacing is more than this factor above the finest one gets kernel 1 and is not pooled.
ANISOTROPY_FACTOR = 2.0

# nnU-Net v2's planner constants for its 2-D configuration: a U-Net whose convolution outputs sum to 85e6
# elements per patch trains with batch 12 in 8 GB of GPU memory; the 2-D start patch has 2048² pixels before it
# is clipped to the median shape; a batch never covers more than 5% of the dataset's voxels, nor drops below 2.
NNUNET_2D_REFERENCE_ELEMENTS = 85_000_000
NNUNET_2D_REFERENCE_BATCH = 12
NNUNET_REFERENCE_GPU_GB = 8.0
NNUNET_2D_START_PIXELS = 2048**2
NNUNET_MAX_DATASET_FRACTION = 0.05
NNUNET_MIN_BATCH = 2
# Channel cap per configuration (nnU-Net: 512 in 2-D, 320 in 3-D).
MAX_CHANNELS = {"2d": 512, "3d_fullres": 320}


def require_monai() -> Any:
    """Imports and returns ``monai`` (networks and losses loaded).

    Raises:
        ConfigError: MONAI is not installed.
    """
    try:
        import monai
        import monai.losses
        import monai.networks.nets  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"the U-Net baseline needs MONAI, which is not installed ({error}); pip install 'masksam[baselines]'"
        ) from None
    return monai


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to build the baseline U-Net (stored in its model file).

    Attributes:
        patch_size: (T, H, W) input patch (the plans' patch, so both models see the same windows).
        in_channels: C, input modalities.
        num_classes: K, classes including background (softmax over K).
        channels: Feature channels per level, finest first.
        kernel_sizes: (T, H, W) convolution kernel per level.
        strides: (T, H, W) downsampling stride into each level; the first is (1, 1, 1).
        batch_dice: Soft Dice pooled over the batch instead of per patch.
        configuration: ``3d_fullres`` (3-D convolutions) or ``2d`` (2-D convolutions on every slice of a patch,
            slices folded into the batch; every kernel and stride is then 1 along T).
        deep_supervision: Also train the coarser decoder outputs (nnU-Net's weights: see
            :meth:`deep_supervision_weights`).
        batch_size: Patches per step the configuration was planned with (``2d``: nnU-Net's rule for an 8 GB
            GPU); None: the plans' batch.
    """

    patch_size: Triple
    in_channels: int
    num_classes: int
    channels: tuple[int, ...]
    kernel_sizes: tuple[Triple, ...]
    strides: tuple[Triple, ...]
    batch_dice: bool = True
    configuration: str = "3d_fullres"
    deep_supervision: bool = False
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.configuration not in CONFIGURATIONS:
            raise ConfigError(
                f"U-Net config: configuration '{self.configuration}' is unknown; choose {' or '.join(CONFIGURATIONS)}"
            )
        levels = len(self.channels)
        if levels < 3 or len(self.kernel_sizes) != levels or len(self.strides) != levels:
            raise ConfigError(
                f"U-Net config: {levels} channel counts, {len(self.kernel_sizes)} kernels and {len(self.strides)} "
                "strides; give one of each per level (at least 3 levels)"
            )
        if tuple(self.strides[0]) != (1, 1, 1):
            raise ConfigError(f"U-Net config: the first stride must be (1, 1, 1), got {self.strides[0]}")
        total = [math.prod(stride[axis] for stride in self.strides) for axis in range(3)]
        if any(size % factor for size, factor in zip(self.patch_size, total, strict=True)):
            raise ConfigError(
                f"U-Net config: patch {self.patch_size} is not divisible by the total downsampling {tuple(total)}"
            )
        if min(self.channels) < 1 or self.in_channels < 1 or self.num_classes < 2:
            raise ConfigError("U-Net config: channels and input channels must be positive, classes at least 2")
        if self.configuration == "2d" and any(k[0] != 1 for k in (*self.kernel_sizes, *self.strides)):
            raise ConfigError(
                "U-Net config: a 2d configuration convolves single slices; kernels and strides need 1 along T"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"U-Net config: batch size must be positive, got {self.batch_size}")

    @property
    def num_levels(self) -> int:
        return len(self.channels)

    @property
    def spatial_dims(self) -> int:
        """Dimensions of the convolutions (2 for the ``2d`` configuration)."""
        return 2 if self.configuration == "2d" else 3

    @property
    def supervised_heads(self) -> int:
        """Coarser decoder outputs trained beside the full-resolution one.

        nnU-Net supervises every decoder level but gives the lowest one weight 0, so a network of L levels trains
        L - 2 outputs: the full-resolution one and L - 3 heads.
        """
        return max(0, self.num_levels - 3) if self.deep_supervision else 0

    def deep_supervision_weights(self) -> tuple[float, ...]:
        """Loss weights of the full-resolution output and each supervised head: 1, 1/2, 1/4, ..., summing to 1."""
        weights = [0.5**level for level in range(1 + self.supervised_heads)]
        return tuple(weight / sum(weights) for weight in weights)

    @property
    def include_background(self) -> bool:
        """Background is one of the K softmax classes (read by the Predictor's ensemble checks)."""
        return True

    @property
    def backbone(self) -> str:
        """Architecture name the shared Trainer puts in its logs (there is no SAM backbone)."""
        return "unet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict` (lists become tuples).

        Raises:
            ConfigError: Unknown or missing fields, or inconsistent values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"U-Net config: unknown field(s) {', '.join(unknown)}")
        values = dict(data)  # files written before configuration, deep_supervision and batch_size: 3-D defaults
        try:
            values["patch_size"] = tuple(int(v) for v in values["patch_size"])
            values["channels"] = tuple(int(v) for v in values["channels"])
            for key in ("kernel_sizes", "strides"):
                values[key] = tuple(tuple(int(v) for v in triple) for triple in values[key])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"U-Net config: missing or malformed field ({error})") from None


def plan_levels(
    patch_size: Triple,
    spacing: tuple[float, float, float],
    *,
    max_levels: int = 6,
    min_feature_size: int = MIN_FEATURE_SIZE,
) -> tuple[tuple[Triple, ...], tuple[Triple, ...]]:
    """Kernels and strides per level by nnU-Net's rules (see the module docstring).

    Args:
        patch_size: (T, H, W) patch.
        spacing: (T, H, W) voxel spacing of the preprocessed data.
        max_levels: Most levels (resolutions), the finest included.
        min_feature_size: Smallest feature-map edge an axis may be pooled down to.

    Returns:
        (kernel sizes, strides), one (T, H, W) triple per level; the first stride is (1, 1, 1).
    """
    size = list(patch_size)
    current = [float(s) for s in spacing]
    wide = [False, False, False]  # an axis keeps kernel 3 once it has got it
    kernels: list[Triple] = []
    strides: list[Triple] = [(1, 1, 1)]
    while True:
        finest = min(current)
        wide = [was or step <= ANISOTROPY_FACTOR * finest for was, step in zip(wide, current, strict=True)]
        kernels.append(tuple(3 if w else 1 for w in wide))
        if len(kernels) == max_levels:
            break
        poolable = [a for a in range(3) if size[a] >= 2 * min_feature_size and size[a] % 2 == 0]
        if not poolable:
            break
        finest_poolable = min(current[a] for a in poolable)
        pooled = {a for a in poolable if current[a] <= ANISOTROPY_FACTOR * finest_poolable}
        strides.append(tuple(2 if a in pooled else 1 for a in range(3)))
        size = [s // 2 if a in pooled else s for a, s in enumerate(size)]
        current = [s * 2 if a in pooled else s for a, s in enumerate(current)]
    return tuple(kernels), tuple(strides)


def plan_levels_2d(
    median_shape: Pair, spacing: tuple[float, float], *, min_feature_size: int = MIN_FEATURE_SIZE
) -> tuple[Pair, tuple[Pair, ...], tuple[Pair, ...]]:
    """nnU-Net v2's 2-D topology: the patch, and kernels and strides per stage.

    The start patch has the spacing's aspect ratio and 2048² pixels, clipped to the median in-plane shape.
    Each stage then halves (rounding up) every axis that is still at least ``2 * min_feature_size`` pixels
    long and within a factor 2 of the finest such spacing; a lone axis is pooled only while at least
    ``3 * min_feature_size`` long. Kernels are 3 along an axis once its spacing is within a factor 2 of the
    finest, and 3×3 in the bottleneck. The patch is finally padded up to a multiple of each axis' total
    downsampling.

    Args:
        median_shape: (H, W) median in-plane shape of the preprocessed cases.
        spacing: (H, W) target spacing.
        min_feature_size: Smallest bottleneck edge (nnU-Net: 4).

    Returns:
        ((H, W) patch, (H, W) kernel per stage, (H, W) stride into each stage, the first (1, 1)).
    """
    inverse = [1.0 / s for s in spacing]
    scale = math.sqrt(NNUNET_2D_START_PIXELS / math.prod(inverse))
    size = [float(min(round(i * scale), m)) for i, m in zip(inverse, median_shape, strict=True)]
    patch = [int(s) for s in size]
    current = [float(s) for s in spacing]
    kernel = [1, 1]
    pools = [0, 0]
    kernels: list[Pair] = []
    strides: list[Pair] = [(1, 1)]
    while True:
        valid = [a for a in range(2) if size[a] >= 2 * min_feature_size]
        if not valid:
            break
        finest = min(current[a] for a in valid)
        valid = [a for a in valid if current[a] / finest < ANISOTROPY_FACTOR]
        if len(valid) == 1 and size[valid[0]] < 3 * min_feature_size:
            break
        kernel = [3 if k == 3 or current[a] / min(current) < ANISOTROPY_FACTOR else 1 for a, k in enumerate(kernel)]
        kernels.append((kernel[0], kernel[1]))
        strides.append((2 if 0 in valid else 1, 2 if 1 in valid else 1))
        for a in valid:
            pools[a] += 1
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
    kernels.append((3, 3))  # bottleneck
    padded = tuple(-(-p // 2**n) * 2**n for p, n in zip(patch, pools, strict=True))
    return (padded[0], padded[1]), tuple(kernels), tuple(strides)


def feature_map_elements(config: UNetConfig) -> int:
    """Elements of all convolution outputs for one patch: nnU-Net's proxy for a U-Net's training memory.

    Counted as nnU-Net counts its plain U-Net: two convolutions per encoder stage; per decoder stage the
    transposed convolution and two convolutions at the skip's resolution; the final 1×1 output layer.
    """
    size = list(config.patch_size)
    total = 0
    for level, (channels, stride) in enumerate(zip(config.channels, config.strides, strict=True)):
        size = [s // d for s, d in zip(size, stride, strict=True)]
        voxels = math.prod(size)
        total += 2 * channels * voxels  # encoder
        if level < config.num_levels - 1:
            total += 3 * channels * voxels  # decoder: transposed convolution + two convolutions
        if level == 0:
            total += config.num_classes * voxels
    return total


def nnunet_2d_batch_size(
    config: UNetConfig, dataset_voxels: float | None, *, gpu_memory_gb: float = NNUNET_REFERENCE_GPU_GB
) -> int:
    """The batch nnU-Net v2 plans for a 2-D U-Net: the reference batch scaled by memory, capped by the data.

    ``round(85e6 · gpu_memory_gb / 8 / feature_map_elements · 12)``, at most ``round(5% of dataset_voxels /
    patch voxels)``, at least 2. (nnU-Net also shrinks the patch when even batch 2 would not fit; in 2-D that
    needs a patch above about 1250×1250 pixels and is left out.)

    Args:
        config: The 2-D network and its patch.
        dataset_voxels: Median case voxels × number of cases (None: no cap from the data).
        gpu_memory_gb: The memory target (nnU-Net's default: 8 GB).

    Returns:
        Patches per step.
    """
    reference = NNUNET_2D_REFERENCE_ELEMENTS * gpu_memory_gb / NNUNET_REFERENCE_GPU_GB
    batch = round(reference / feature_map_elements(config) * NNUNET_2D_REFERENCE_BATCH)
    if dataset_voxels is not None:
        batch = min(batch, round(dataset_voxels * NNUNET_MAX_DATASET_FRACTION / math.prod(config.patch_size)))
    return max(batch, NNUNET_MIN_BATCH)


def unet_config_for(
    plans: Plans,
    *,
    configuration: str = "3d_fullres",
    num_cases: int | None = None,
    base_channels: int = 32,
    max_channels: int | None = None,
    max_levels: int | None = None,
    batch_dice: bool = True,
) -> UNetConfig:
    """The nnU-Net-style U-Net for a planned dataset, in either configuration (see the module docstring).

    Args:
        plans: Plans of the preprocessed dataset.
        configuration: ``3d_fullres`` (the plans' patch) or ``2d`` (nnU-Net's 2-D plan from the median shape).
        num_cases: Cases in the dataset, for the ``2d`` batch's 5% cap (None: no cap).
        base_channels: Channels of the finest level (doubled per level).
        max_channels: Cap on the channels of a level (default: 320 in 3-D, 512 in 2-D, as nnU-Net).
        max_levels: Most resolution levels (default: 6 in 3-D; in 2-D as many as the patch allows).
        batch_dice: Soft Dice pooled over the batch (nnU-Net's 2-D default).

    Returns:
        The config.

    Raises:
        ConfigError: Unknown configuration.
    """
    if configuration not in CONFIGURATIONS:
        raise ConfigError(f"U-Net configuration '{configuration}' is unknown; choose {' or '.join(CONFIGURATIONS)}")
    max_channels = max_channels or MAX_CHANNELS[configuration]
    if configuration == "3d_fullres":
        kernels, strides = plan_levels(tuple(plans.patch_size), tuple(plans.target_spacing), max_levels=max_levels or 6)
        patch = tuple(plans.patch_size)
    else:
        median_shape, spacing = tuple(plans.median_shape), tuple(plans.target_spacing)
        (height, width), kernels_2d, strides_2d = plan_levels_2d(median_shape[1:], spacing[1:])
        levels = min(len(kernels_2d), max_levels or len(kernels_2d))
        kernels = tuple((1, *k) for k in kernels_2d[: levels - 1]) + ((1, 3, 3),)
        strides = tuple((1, *s) for s in strides_2d[:levels])
        total = [math.prod(s[axis] for s in strides) for axis in (1, 2)]
        patch = (1, -(-height // total[0]) * total[0], -(-width // total[1]) * total[1])
    config = UNetConfig(
        patch_size=patch,
        in_channels=plans.num_channels,
        num_classes=plans.num_classes,
        channels=tuple(min(base_channels * 2**level, max_channels) for level in range(len(kernels))),
        kernel_sizes=kernels,
        strides=strides,
        batch_dice=batch_dice,
        configuration=configuration,
        deep_supervision=configuration == "2d",
    )
    if configuration == "2d":
        voxels = None if num_cases is None else math.prod(plans.median_shape) * num_cases
        config = replace(config, batch_size=nnunet_2d_batch_size(config, voxels))
    return config


class UNet(nn.Module):
    """The baseline network: MONAI's DynUNet (nnU-Net's plain conv U-Net), 3-D or 2-D per slice.

    With deep supervision, MONAI's DynUNet returns in training mode the full-resolution logits and the coarser
    heads' logits upsampled (nearest) to full resolution; nnU-Net instead downsamples the labels to each head.
    The loss on a nearest-upsampled head is the loss of the coarse logits against the labels' area fractions.

    Args:
        config: Architecture; ``config`` stays attached (the Predictor reads patch size and classes from it).

    Raises:
        ConfigError: MONAI is not installed.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        monai = require_monai()
        self.config = config
        axes = slice(3 - config.spatial_dims, 3)  # 2-D: the (H, W) part of each (T, H, W) triple
        heads = config.supervised_heads
        self.network = monai.networks.nets.DynUNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.num_classes,
            kernel_size=[list(k[axes]) for k in config.kernel_sizes],
            strides=[list(s[axes]) for s in config.strides],
            upsample_kernel_size=[list(s[axes]) for s in config.strides[1:]],
            filters=list(config.channels),
            norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=heads > 0,
            deep_supr_num=max(heads, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image: (B, C, T, H, W) preprocessed patches of the config's in-plane size (2-D: any T).

        Returns:
            (B, K, T, H, W) class logits; in training mode with deep supervision (B, S, K, T, H, W): the
            full-resolution logits, then the S - 1 supervised heads upsampled to full resolution.
        """
        if self.config.spatial_dims == 3:
            return self.network(image)
        batch, channels, depth, height, width = image.shape
        slices = image.transpose(1, 2).reshape(batch * depth, channels, height, width)  # (B*T, C, H, W)
        logits = self.network(slices)  # (B*T, K, H, W) or (B*T, S, K, H, W)
        return logits.reshape(batch, depth, *logits.shape[1:]).movedim(1, -3)  # (B, [S,] K, T, H, W)


class DiceCrossEntropyLoss(nn.Module):
    """nnU-Net's loss: cross-entropy + soft Dice over the foreground classes (weights 1 and 1).

    Soft Dice per foreground class k: ``(2·Σ p_k y_k + s) / (Σ p_k + Σ y_k + s)`` with p the softmax, y the
    one-hot label, s = 1e-5, sums over (T, H, W) and, with ``batch_dice``, the batch; the Dice term is
    ``1 - mean_k Dice`` (MONAI's DiceLoss), which differs from nnU-Net's ``-Dice`` by a constant only.

    Args:
        batch_dice: Pool the Dice sums over the batch.

    Raises:
        ConfigError: MONAI is not installed.
    """

    def __init__(self, *, batch_dice: bool = True) -> None:
        super().__init__()
        monai = require_monai()
        self.dice = monai.losses.DiceLoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5
        )

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: (B, K, T, H, W) class logits.
            label: (B, T, H, W) integer class ids.

        Returns:
            ``total``, ``dice`` and ``cross_entropy`` (scalars; ``total`` is their sum).
        """
        logits = logits.float()
        cross_entropy = F.cross_entropy(logits, label)
        dice = self.dice(logits, label.unsqueeze(1))  # label as (B, 1, T, H, W)
        return {"total": cross_entropy + dice, "dice": dice, "cross_entropy": cross_entropy}


class DeepSupervisionLoss(nn.Module):
    """nnU-Net's deep supervision: one loss applied to several outputs, its terms summed with fixed weights.

    Args:
        loss: A loss returning a dict of scalar terms (e.g. :class:`DiceCrossEntropyLoss`).
        weights: Weight of each output, full resolution first (``UNetConfig.deep_supervision_weights``).
    """

    def __init__(self, loss: nn.Module, weights: tuple[float, ...]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = tuple(weights)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: (B, S, K, T, H, W) logits of S outputs (training), or (B, K, T, H, W) of the final output
                alone (evaluation mode: the loss of that output).
            label: (B, T, H, W) integer class ids.

        Returns:
            The wrapped loss's terms, each the weighted sum over outputs.
        """
        if logits.ndim == label.ndim + 1:
            return self.loss(logits, label)
        if logits.shape[1] != len(self.weights):
            raise ValueError(f"{logits.shape[1]} outputs but {len(self.weights)} deep supervision weights")
        total: dict[str, torch.Tensor] = {}
        for weight, output in zip(self.weights, logits.unbind(dim=1), strict=True):
            for key, value in self.loss(output, label).items():
                total[key] = total[key] + weight * value if key in total else weight * value
        return total
