"""Training checkpoints: what they hold, atomic writes, compatibility checks, and loading a trained model.

A checkpoint holds only what training changes (the trainable weights, optimiser, scheduler, scaler, RNG states
and counters) plus everything needed to rebuild the model: the model config, the plans, and where the frozen SAM
weights come from. Frozen weights loaded from an official file are referenced by path and sha256 (a SAM
checkpoint is 0.4–2.5 GB); a backbone with random weights (no file) is stored in full so the model can be rebuilt.

Files are written to a temporary file in the same folder, flushed to disk, then renamed over the target, so a
killed process or a full disk never leaves a truncated ``checkpoint_latest.pt``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masksam.backbones.weights import find_cached_weights, sha256_of
from masksam.data.plans import Plans
from masksam.errors import CheckpointError
from masksam.model.config import MaskSamConfig
from masksam.model.masksam import MaskSAM, build_masksam

CHECKPOINT_FORMAT = "masksam-training-checkpoint"
# 2: the backbone's own intensity mapping, the gated mask prompt and silent classifier tokens (a version-1 model
# computes something else with the same weights, so it is refused rather than silently misread).
CHECKPOINT_VERSION = 2
UNET_FORMAT = "masksam-unet-baseline"  # written by masksam.baselines; named here so each reader knows the other

# Our torch.save formats: what each file is, and what to do with it when it is given where another is expected.
FILE_KINDS = {
    CHECKPOINT_FORMAT: ("a MaskSAM checkpoint", "predict with 'masksam predict -m MODEL_DIR'"),
    UNET_FORMAT: ("a U-Net baseline model file", "predict with masksam.baselines.predict_unet"),
}
CHECKPOINT_NAMES = ("latest", "best", "final")


@dataclass(frozen=True)
class BackboneSource:
    """Where the frozen SAM weights of a model come from.

    Attributes:
        name: Backbone key (``vit_b``, ``lite_medsam``, ...).
        path: Official weights file the backbone was loaded from, or None for random weights.
        sha256: Hash of that file (to find it again, e.g. in the weights cache on another machine).
    """

    name: str
    path: str | None = None
    sha256: str | None = None

    @classmethod
    def from_file(cls, name: str, path: str | Path | None) -> BackboneSource:
        if path is None:
            return cls(name=name)
        path = Path(path).expanduser().resolve()
        return cls(name=name, path=str(path), sha256=sha256_of(path))


def frozen_prefixes(model: MaskSAM) -> tuple[str, ...]:
    """State-dict prefixes of SAM's frozen parts inside ``model`` (e.g. ``image_encoder.encoder.``)."""
    frozen = {id(module) for module in model.frozen_modules()}
    return tuple(f"{name}." for name, module in model.named_modules() if id(module) in frozen)


def split_state(model: MaskSAM) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainable part, frozen part) of ``model.state_dict()``, split by the frozen modules' prefixes."""
    prefixes = frozen_prefixes(model)
    trainable, frozen = {}, {}
    for key, value in model.state_dict().items():
        (frozen if key.startswith(prefixes) else trainable)[key] = value
    return trainable, frozen


def _to_cpu(value: Any) -> Any:
    """Tensors anywhere inside dicts/lists moved to CPU, so a GPU checkpoint loads on a CPU-only machine."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder, fsync, then ``os.replace``.

    Raises:
        CheckpointError: The file could not be written (e.g. a full disk); the previous file is untouched.
    """
    from masksam.files import default_file_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporaries left by a killed writer (one writer per file: rank 0) are garbage.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), default_file_mode())  # not mkstemp's 0o600: readable as the umask allows
            torch.save(_to_cpu(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise CheckpointError(
            f"{path}: could not write the checkpoint ({error.strerror or error}); free disk space or choose "
            "another output folder — the previous checkpoint is unchanged"
        ) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def model_payload(model: MaskSAM, plans: Plans, source: BackboneSource) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the model: config, plans, backbone source, weights."""
    trainable, frozen = split_state(model)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": model.config.to_dict(),
        "plans": plans.to_json(),
        "backbone_source": {"name": source.name, "path": source.path, "sha256": source.sha256},
        "trainable_state": trainable,
        "frozen_state": frozen if source.path is None else None,
    }


# Why an older format is refused, and what to do.
OLD_VERSIONS = {
    (CHECKPOINT_FORMAT, 1): (
        "it was trained before masksam fed the backbone its own intensity scale and gated the mask prompt, so its "
        "weights do not fit today's model; train it again"
    ),
}


def read_tagged_file(
    path: str | Path, *, expected_format: str, version: int, weights_only: bool, not_found: str, foreign: str
) -> dict[str, Any]:
    """Reads one of masksam's ``torch.save`` dicts onto the CPU, checking its format tag and version.

    Args:
        path: The file.
        expected_format: Its ``format`` tag (a key of ``FILE_KINDS``).
        version: The format version this masksam writes.
        weights_only: ``torch.load``'s safe mode (only for files without Python objects such as RNG states).
        not_found: What to do when the file is missing (the error's second half).
        foreign: What to do with a file that has no tag of ours (the error's second half).

    Raises:
        CheckpointError: Missing, unreadable, another of our formats, untagged, or another version; one line.
    """
    path = Path(path)
    what = FILE_KINDS[expected_format][0]
    if not path.is_file():
        raise CheckpointError(f"{path}: {what.removeprefix('a ')} not found; {not_found}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not readable as {what} ({type(error).__name__}); it may be truncated or foreign"
        ) from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != expected_format:
        if found in FILE_KINDS:
            kind, use = FILE_KINDS[found]
            raise CheckpointError(f"{path}: is {kind}, not {what}; {use}")
        raise CheckpointError(f"{path}: not {what} (no '{expected_format}' tag); {foreign}")
    if payload.get("version") != version:
        why = OLD_VERSIONS.get((expected_format, payload.get("version")), "use the masksam version that wrote it")
        raise CheckpointError(
            f"{path}: {what.removeprefix('a ')} format version {payload.get('version')} is not {version}; {why}"
        )
    return payload


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a masksam training checkpoint onto the CPU.

    Raises:
        CheckpointError: Missing, unreadable, or not a masksam training checkpoint.
    """
    return read_tagged_file(
        path,
        expected_format=CHECKPOINT_FORMAT,
        version=CHECKPOINT_VERSION,
        weights_only=False,  # holds RNG states
        not_found="train a model first ('masksam train') or check the path",
        foreign="official SAM weights go to --checkpoint of 'masksam train'",
    )


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


def resolve_backbone_weights(source: dict[str, Any], override: str | Path | None, path: Path) -> Path | None:
    """The official weights file for a checkpoint's frozen backbone, or None when they are embedded.

    Tries ``override`` first, then the recorded path, then the weights cache (matching sha256). A file found
    whose sha256 differs from the recorded one is refused: the trained adapters and heads fit the frozen weights
    they were trained on, and another file would load strictly (same shapes) and silently predict worse.

    Raises:
        CheckpointError: The recorded file is gone and no replacement was found, or the file found holds other
            weights than the ones the model was trained on.
    """
    if override is not None:
        override = Path(override)
        if override.is_file():  # a missing file is reported by the weights loader
            check_backbone_file(override, source, path)
        return override
    if source.get("path") is None:
        return None
    recorded = Path(source["path"])
    expected = source.get("sha256")
    found = sha256_of(recorded) if recorded.is_file() and expected is not None else None
    if recorded.is_file() and found == expected:
        return recorded
    cached = None
    try:
        cached = find_cached_weights(source["name"])
    except Exception:  # a backbone without a cached download (vit_b from Meta) has no cache entry
        cached = None
    if cached is not None and expected is not None and sha256_of(cached) == expected:
        return cached
    if found is not None:
        raise CheckpointError(other_weights_message(path, source, recorded, found))  # the recorded file was replaced
    raise CheckpointError(
        f"{path}: its frozen {source['name']} weights {recorded} are missing on this machine; pass the same file "
        f"with --backbone-checkpoint (or run 'masksam weights {source['name']}')"
    )


def check_backbone_file(file: Path, source: dict[str, Any], path: Path) -> None:
    """Raises a one-line CheckpointError when ``file``'s sha256 is not the one recorded in checkpoint ``path``."""
    expected = source.get("sha256")
    if expected is None:  # nothing recorded to compare with
        return
    found = sha256_of(file)
    if found != expected:
        raise CheckpointError(other_weights_message(path, source, file, found))


def other_weights_message(path: Path, source: dict[str, Any], file: Path, found: str) -> str:
    return (
        f"{path}: was trained on frozen {source['name']} weights with sha256 {source['sha256'][:16]}…, but {file} "
        f"has sha256 {found[:16]}… (other weights); pass the file it was trained with (predict: "
        "--backbone-checkpoint; train --continue: --checkpoint)"
    )


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, ready for inference or fine-tuning."""

    model: MaskSAM
    plans: Plans
    payload: dict[str, Any]
    path: Path


def load_trained_model(
    path: str | Path, *, device: str | torch.device = "cpu", backbone_checkpoint: str | Path | None = None
) -> TrainedModel:
    """Rebuilds the model stored in a training checkpoint (in eval mode, on ``device``).

    Args:
        path: ``checkpoint_{latest,best,final}.pt``.
        device: Where to put the model.
        backbone_checkpoint: Official weights to use instead of the recorded file.

    Raises:
        CheckpointError: Unreadable file, missing frozen weights, or weights that do not fit the recorded config.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    config = MaskSamConfig.from_dict(payload["model_config"])
    plans = Plans.from_json(payload["plans"])
    weights = resolve_backbone_weights(payload["backbone_source"], backbone_checkpoint, path)
    model = build_masksam(config, weights)
    state = dict(payload["trainable_state"])
    if weights is None:
        if payload.get("frozen_state") is None:
            raise CheckpointError(f"{path}: holds neither frozen weights nor their file; the checkpoint is incomplete")
        state.update(payload["frozen_state"])
    load_model_state(model, state, path, strict_frozen=weights is None)
    return TrainedModel(model=model.to(device).eval(), plans=plans, payload=payload, path=path)


def load_model_state(model: MaskSAM, state: dict[str, torch.Tensor], path: Path, *, strict_frozen: bool) -> None:
    """Loads trainable (and, if ``strict_frozen``, frozen) weights; any mismatch is a one-line CheckpointError."""
    expected_trainable, expected_frozen = split_state(model)
    expected = {**expected_trainable, **(expected_frozen if strict_frozen else {})}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(
            f"{path}: weights do not fit this model — {', '.join(parts)}; was it made by another version?"
        )
    model.load_state_dict(state, strict=False)


def unwrap(model: nn.Module) -> MaskSAM:
    """The MaskSAM inside a DistributedDataParallel or torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model  # type: ignore[return-value]


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
