"""Baselines trained and evaluated with MaskSAM's own data pipeline, budget and inference path.

What a user calls::

    from masksam.baselines import predict_unet, train_unet

    model_file = train_unet(PLANS_DIR, OUT, fold=0, minutes=60)        # OUT/fold_0/checkpoint_final.pt
    predict_unet(model_file, IMAGES_DIR, PRED_DIR, tta=True)            # CASE.nii.gz with the inputs' headers

Needs MONAI: ``pip install 'masksam[baselines]'``.
"""

from masksam.baselines.unet import DiceCrossEntropyLoss, UNet, UNetConfig, plan_levels, require_monai, unet_config_for
from masksam.baselines.unet_checkpoint import TrainedUNet, load_unet, read_unet_file
from masksam.baselines.unet_inference import UNetPredictor, predict_unet
from masksam.baselines.unet_training import UNetTrainer, train_unet

__all__ = [
    "DiceCrossEntropyLoss",
    "TrainedUNet",
    "UNet",
    "UNetConfig",
    "UNetPredictor",
    "UNetTrainer",
    "load_unet",
    "plan_levels",
    "predict_unet",
    "read_unet_file",
    "require_monai",
    "train_unet",
    "unet_config_for",
]
