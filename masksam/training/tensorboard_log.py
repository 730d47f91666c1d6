"""Epoch records as TensorBoard scalars (``masksam train --tensorboard``; needs the tensorboard package)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from masksam.errors import ConfigError

# Record keys (see Trainer.end_epoch) → TensorBoard tags; keys with a prefix below are grouped by it.
_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "mean_dice": "pseudo_dice/mean",
    "mean_dice_ema": "pseudo_dice/mean_ema",
    "lr": "optimiser/lr",
    "epoch_seconds": "time/epoch_seconds",
}
_PREFIXES = {"loss_": "train_loss_terms/", "dice_": "pseudo_dice/"}


def scalar_tag(key: str) -> str:
    """TensorBoard tag of an epoch-record key: losses, pseudo-Dice, optimiser and time in their own groups."""
    if key in _TAGS:
        return _TAGS[key]
    for prefix, group in _PREFIXES.items():
        if key.startswith(prefix):
            return group + key.removeprefix(prefix)
    return f"other/{key}"


class TensorBoardLog:
    """Writes every number of each epoch record at step = epoch into ``folder`` (a resumed run appends).

    Raises:
        ConfigError: The tensorboard package is not installed.
    """

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch's module needs the separate tensorboard package
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'masksam[tensorboard]' "
                "(or drop --tensorboard; metrics.csv and progress.png are written anyway)"
            ) from error
        self.folder = Path(folder)
        self._writer = SummaryWriter(log_dir=str(self.folder))

    def write(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key == "epoch" or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            self._writer.add_scalar(scalar_tag(key), float(value), global_step=epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
