"""The U-Net model file: config, plans and weights, and loading it back.

``checkpoint_best.pt``/``checkpoint_final.pt`` of a training run are model files (plus the run's settings and
history); ``checkpoint_latest.pt`` adds the optimiser, scheduler and RNG states that a resume needs.

The file is a plain dict saved with ``torch.save`` through :func:`masksam.model_files.save_atomic`
(temporary file, fsync, rename) and read with ``weights_only=True``. Its ``format`` tag is
:data:`masksam.model_files.UNET_MODEL`, so a MaskSAM checkpoint given where a U-Net is expected (or the
reverse) is refused in one line; :func:`load_unet` is registered as the reader of that tag, so
:func:`masksam.model_files.load_model_file` rebuilds a U-Net once this package is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from masksam.baselines.unet import UNet, UNetConfig
from masksam.data.plans import Plans
from masksam.errors import CheckpointError, MaskSamError
from masksam.model_files import UNET_MODEL, read_tagged_file, register_loader, state_mismatch

UNET_FORMAT = UNET_MODEL.tag
UNET_VERSION = UNET_MODEL.version


@dataclass
class TrainedUNet:
    """A U-Net rebuilt from its model file (the fields :class:`~masksam.inference.predictor.Predictor` reads)."""

    model: UNet
    plans: Plans
    payload: dict[str, Any]
    path: Path


def unet_payload(model: UNet, plans: Plans) -> dict[str, Any]:
    """What rebuilds the model: format tag, config, plans and the full state dict."""
    return {
        "format": UNET_FORMAT,
        "version": UNET_VERSION,
        "unet_config": model.config.to_dict(),
        "plans": plans.to_json(),
        "state": model.state_dict(),
    }


def read_unet_file(path: str | Path) -> dict[str, Any]:
    """Reads a U-Net model file onto the CPU.

    Raises:
        CheckpointError: Missing, unreadable, a MaskSAM checkpoint, or another format version.
    """
    return read_tagged_file(path, UNET_MODEL)


def load_unet_state(model: UNet, state: dict[str, torch.Tensor], path: Path) -> None:
    """Loads weights; any missing, unexpected or wrongly shaped tensor is a one-line CheckpointError."""
    expected = model.state_dict()
    mismatch = state_mismatch(expected, state)
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit the recorded U-Net — {mismatch}")
    model.load_state_dict(state)


def load_unet(path: str | Path, *, device: str | torch.device = "cpu") -> TrainedUNet:
    """Rebuilds the U-Net of a model file, in eval mode on ``device``.

    Raises:
        CheckpointError: Unreadable or foreign file, or weights that do not fit the recorded config.
        ConfigError: MONAI is not installed.
    """
    path = Path(path)
    payload = read_unet_file(path)
    try:
        config = UNetConfig.from_dict(payload["unet_config"])
        plans = Plans.from_json(payload["plans"])
    except (KeyError, MaskSamError) as error:
        raise CheckpointError(f"{path}: U-Net model file is incomplete ({error}); it may be damaged") from None
    model = UNet(config)
    load_unet_state(model, payload["state"], path)
    return TrainedUNet(model=model.to(device).eval(), plans=plans, payload=payload, path=path)


register_loader(UNET_FORMAT, load_unet)
