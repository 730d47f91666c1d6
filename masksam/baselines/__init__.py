"""Baselines trained and evaluated with MaskSAM's own data pipeline, budget and inference path.

Needs MONAI: ``pip install 'masksam[baselines]'``.
"""

from masksam.baselines.unet import DiceCrossEntropyLoss, UNet, UNetConfig, plan_levels, require_monai, unet_config_for
from masksam.baselines.unet_checkpoint import TrainedUNet, load_unet, read_unet_file

__all__ = [
    "DiceCrossEntropyLoss",
    "TrainedUNet",
    "UNet",
    "UNetConfig",
    "load_unet",
    "plan_levels",
    "read_unet_file",
    "require_monai",
    "unet_config_for",
]
