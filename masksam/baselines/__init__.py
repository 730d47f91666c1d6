"""Baselines trained and evaluated with MaskSAM's own data pipeline, budget and inference path.

What a user calls::

    from masksam.baselines import predict_unet, train_unet

    model_file = train_unet(PLANS_DIR, OUT, fold=0, minutes=60)        # OUT/fold_0/checkpoint_final.pt
    model_file = train_unet(PLANS_DIR, OUT2, configuration="2d", optimizer="sgd")  # nnU-Net's 2d configuration
    predict_unet(model_file, IMAGES_DIR, PRED_DIR, tta=True)            # CASE.nii.gz with the inputs' headers

Needs MONAI: ``pip install 'masksam[baselines]'``.
"""

from masksam.baselines.unet import (
    DeepSupervisionLoss,
    DiceCrossEntropyLoss,
    UNet,
    UNetConfig,
    nnunet_2d_batch_size,
    plan_levels,
    plan_levels_2d,
    require_monai,
    unet_config_for,
)
from masksam.baselines.unet_checkpoint import TrainedUNet, load_unet, read_unet_file
from masksam.baselines.unet_inference import UNetPredictor, predict_unet
from masksam.baselines.unet_training import UNetTrainer, train_unet

__all__ = [
    "DeepSupervisionLoss",
    "DiceCrossEntropyLoss",
    "TrainedUNet",
    "UNet",
    "UNetConfig",
    "UNetPredictor",
    "UNetTrainer",
    "load_unet",
    "nnunet_2d_batch_size",
    "plan_levels",
    "plan_levels_2d",
    "predict_unet",
    "read_unet_file",
    "require_monai",
    "train_unet",
    "unet_config_for",
]
