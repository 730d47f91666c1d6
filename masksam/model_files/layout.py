"""Where model files live in a training output folder: ``MODEL_DIR/fold_F/checkpoint_{latest,best,final}.pt``."""

from __future__ import annotations

from pathlib import Path

from masksam.errors import CheckpointError

CHECKPOINT_NAMES = ("latest", "best", "final")


def checkpoint_path(fold_dir: Path, name: str) -> Path:
    """``fold_dir/checkpoint_{name}.pt`` for name in latest/best/final."""
    if name not in CHECKPOINT_NAMES:
        raise CheckpointError(f"unknown checkpoint '{name}'; choose one of {', '.join(CHECKPOINT_NAMES)}")
    return Path(fold_dir) / f"checkpoint_{name}.pt"


def fold_dir(model_dir: Path, fold: int) -> Path:
    """``MODEL_DIR/fold_{F}`` (``fold_all`` for fold -1), where one fold's training writes its files."""
    return Path(model_dir) / ("fold_all" if fold == -1 else f"fold_{fold}")


def find_fold_checkpoints(model_dir: Path, folds: list[int] | None, name: str) -> list[Path]:
    """Checkpoints named ``name`` of the given folds (default: every trained fold in ``model_dir``).

    Raises:
        CheckpointError: ``model_dir`` holds no such checkpoint.
    """
    model_dir = Path(model_dir)
    if folds:
        candidates = [checkpoint_path(fold_dir(model_dir, fold), name) for fold in folds]
        missing = [str(p) for p in candidates if not p.is_file()]
        if missing:
            raise CheckpointError(f"{missing[0]}: checkpoint not found; train that fold or choose --folds/--checkpoint")
        return candidates
    found = sorted(model_dir.glob(f"fold_*/checkpoint_{name}.pt"))
    if not found:
        raise CheckpointError(
            f"{model_dir}: no fold_*/checkpoint_{name}.pt; train first ('masksam train ... -o {model_dir}') "
            "or pick another --checkpoint (latest/best/final)"
        )
    return found
