"""Model files: the tagged ``torch.save`` files masksam writes, one layer below training and inference.

Training writes its checkpoints through this package, inference reads them through it, and the baselines
register their U-Net loader with it; it imports none of them (``tests/model_files/test_layering.py``).

What a caller uses::

    from masksam.model_files import load_model_file, load_trained_model, save_atomic

    trained = load_trained_model(MODEL / "fold_0" / "checkpoint_final.pt")   # MaskSAM, eval mode
    anything = load_model_file(path)                                          # by the file's format tag
"""

from masksam.model_files.layout import CHECKPOINT_NAMES, checkpoint_path, find_fold_checkpoints, fold_dir
from masksam.model_files.masksam_checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    BackboneSource,
    TrainedModel,
    frozen_prefixes,
    load_model_state,
    load_trained_model,
    model_payload,
    read_checkpoint,
    resolve_backbone_weights,
    split_state,
)
from masksam.model_files.tagged import (
    FORMATS,
    MASKSAM_CHECKPOINT,
    UNET_MODEL,
    FileFormat,
    file_format_of,
    load_model_file,
    read_tagged_file,
    register_loader,
    save_atomic,
    state_mismatch,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAMES",
    "CHECKPOINT_VERSION",
    "FORMATS",
    "MASKSAM_CHECKPOINT",
    "UNET_MODEL",
    "BackboneSource",
    "FileFormat",
    "TrainedModel",
    "checkpoint_path",
    "file_format_of",
    "find_fold_checkpoints",
    "fold_dir",
    "frozen_prefixes",
    "load_model_file",
    "load_model_state",
    "load_trained_model",
    "model_payload",
    "read_checkpoint",
    "read_tagged_file",
    "register_loader",
    "resolve_backbone_weights",
    "save_atomic",
    "split_state",
    "state_mismatch",
]
