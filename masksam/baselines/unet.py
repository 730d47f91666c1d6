"""A from-scratch U-Net for the same patches as MaskSAM: config, network (MONAI's DynUNet) and Dice + CE loss.

The architecture follows nnU-Net's rules, planned from the plans' patch size and target spacing
(:func:`plan_levels`): two 3-D convolutions per level (InstanceNorm, LeakyReLU 0.01), 32 channels doubling per
level up to 320, stride-2 downsampling only along axes that are at least ``2 * min_feature_size`` voxels long
and whose spacing is within a factor 2 of the finest poolable one, and a kernel of 1 along an axis while its
spacing is more than twice the finest (thick slices). With ACDC's 4×256×256 patch the slice axis is never
downsampled (4 < 8), so the network pools in-plane only, as nnU-Net does for thin patches.

MONAI is an optional dependency (``pip install 'masksam[baselines]'``); it is imported only when a network or
loss is built, and its absence is a one-line :class:`~masksam.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from masksam.data.plans import Plans
from masksam.errors import ConfigError

Triple = tuple[int, int, int]

# Feature maps are never downsampled below this many voxels along an axis (nnU-Net's minimum edge length).
MIN_FEATURE_SIZE = 4
# An axis whose spacing is more than this factor above the finest one gets kernel 1 and is not pooled.
ANISOTROPY_FACTOR = 2.0


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
        batch_dice: Soft Dice pooled over the batch (nnU-Net's 3-D default) instead of per patch.
    """

    patch_size: Triple
    in_channels: int
    num_classes: int
    channels: tuple[int, ...]
    kernel_sizes: tuple[Triple, ...]
    strides: tuple[Triple, ...]
    batch_dice: bool = True

    def __post_init__(self) -> None:
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

    @property
    def num_levels(self) -> int:
        return len(self.channels)

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
        values = dict(data)
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


def unet_config_for(
    plans: Plans,
    *,
    base_channels: int = 32,
    max_channels: int = 320,
    max_levels: int = 6,
    batch_dice: bool = True,
) -> UNetConfig:
    """The nnU-Net-style U-Net for a planned dataset: the plans' patch, channels and classes.

    Args:
        plans: Plans of the preprocessed dataset.
        base_channels: Channels of the finest level (doubled per level).
        max_channels: Cap on the channels of a level (nnU-Net: 320 in 3-D).
        max_levels: Most resolution levels.
        batch_dice: Soft Dice pooled over the batch.

    Returns:
        The config.
    """
    kernels, strides = plan_levels(tuple(plans.patch_size), tuple(plans.target_spacing), max_levels=max_levels)
    return UNetConfig(
        patch_size=tuple(plans.patch_size),
        in_channels=plans.num_channels,
        num_classes=plans.num_classes,
        channels=tuple(min(base_channels * 2**level, max_channels) for level in range(len(kernels))),
        kernel_sizes=kernels,
        strides=strides,
        batch_dice=batch_dice,
    )


class UNet(nn.Module):
    """The baseline network: MONAI's DynUNet (nnU-Net's plain conv U-Net) without deep supervision.

    Args:
        config: Architecture; ``config`` stays attached (the Predictor reads patch size and classes from it).

    Raises:
        ConfigError: MONAI is not installed.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        monai = require_monai()
        self.config = config
        self.network = monai.networks.nets.DynUNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.num_classes,
            kernel_size=[list(k) for k in config.kernel_sizes],
            strides=[list(s) for s in config.strides],
            upsample_kernel_size=[list(s) for s in config.strides[1:]],
            filters=list(config.channels),
            norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=False,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image: (B, C, T, H, W) preprocessed patches of the config's patch size.

        Returns:
            (B, K, T, H, W) class logits.
        """
        return self.network(image)


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
