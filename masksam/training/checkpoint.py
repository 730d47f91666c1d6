"""Training checkpoints: the model file (:mod:`masksam.model_files`) plus what a resume needs.

A checkpoint is a MaskSAM model file (config, plans, backbone source, trainable weights; written and read by
:mod:`masksam.model_files`, the layer inference reads through) to which the trainer adds the optimiser,
scheduler, scaler, RNG states, counters and history. This module re-exports the model-file names the trainer
and the ``train`` command use, and adds what only training needs: the compatibility check of a resumed run
and unwrapping a distributed or compiled model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from masksam.errors import CheckpointError
from masksam.model.config import MaskSamConfig
from masksam.model.masksam import MaskSAM
from masksam.model_files import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAMES,
    CHECKPOINT_VERSION,
    BackboneSource,
    TrainedModel,
    checkpoint_path,
    find_fold_checkpoints,
    fold_dir,
    frozen_prefixes,
    load_model_state,
    load_trained_model,
    model_payload,
    read_checkpoint,
    resolve_backbone_weights,
    save_atomic,
    split_state,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAMES",
    "CHECKPOINT_VERSION",
    "BackboneSource",
    "TrainedModel",
    "check_compatible",
    "checkpoint_path",
    "find_fold_checkpoints",
    "fold_dir",
    "frozen_prefixes",
    "load_model_state",
    "load_trained_model",
    "model_payload",
    "read_checkpoint",
    "resolve_backbone_weights",
    "save_atomic",
    "split_state",
    "unwrap",
]


def check_compatible(payload: dict[str, Any], config: MaskSamConfig, path: Path) -> None:
    """Raises a one-line CheckpointError when ``payload`` was trained for another model than ``config``."""
    saved = MaskSamConfig.from_dict(payload["model_config"])
    differences = [
        f"{name} {getattr(saved, name)!r} (now {getattr(config, name)!r})"
        for name in ("backbone", "image_size", "patch_size", "in_channels", "num_classes", "num_queries")
        if getattr(saved, name) != getattr(config, name)
    ]
    if saved.adapters != config.adapters or saved.prompt_generator != config.prompt_generator:
        differences.append("adapter/prompt-generator settings")
    if differences:
        raise CheckpointError(
            f"{path}: trained for another model — {'; '.join(differences)}; start a new output folder or "
            "train with the checkpoint's settings"
        )


def unwrap(model: nn.Module) -> MaskSAM:
    """The MaskSAM inside a DistributedDataParallel or torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model  # type: ignore[return-value]
