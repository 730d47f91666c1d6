"""MaskSAM checkpoints as model files: what rebuilds the model, and rebuilding it.

A checkpoint holds only what training changes (the trainable weights, optimiser, scheduler, scaler, RNG states
and counters) plus everything needed to rebuild the model: the model config, the plans, and where the frozen SAM
weights come from. Frozen weights loaded from an official file are referenced by path and sha256 (a SAM
checkpoint is 0.4–2.5 GB); a backbone with random weights (no file) is stored in full so the model can be rebuilt.
Training adds its own entries (:mod:`masksam.training.checkpoint`); this module reads and writes only the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from masksam.backbones.weights import find_cached_weights, sha256_of
from masksam.data.plans import Plans
from masksam.errors import CheckpointError
from masksam.model.config import MaskSamConfig
from masksam.model.masksam import MaskSAM, build_masksam
from masksam.model_files.tagged import MASKSAM_CHECKPOINT, read_tagged_file, register_loader, state_mismatch

CHECKPOINT_FORMAT = MASKSAM_CHECKPOINT.tag
CHECKPOINT_VERSION = MASKSAM_CHECKPOINT.version


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


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a masksam training checkpoint onto the CPU.

    Raises:
        CheckpointError: Missing, unreadable, or not a masksam training checkpoint.
    """
    return read_tagged_file(path, MASKSAM_CHECKPOINT)


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

    @property
    def default_refinement_passes(self) -> int:
        """Refinement passes its predictions get by default (:mod:`masksam.model.refinement`): 1 for a
        generated-prompt model trained with denoising queries (its decoder learnt clean box and mask prompts of
        each segment), 0 otherwise."""
        if self.model.config.prompt_mode != "generated":
            return 0
        training = self.payload.get("training_config") or {}
        return 1 if training.get("denoising_groups", 0) > 0 else 0


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
    mismatch = state_mismatch(expected, state)
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit this model — {mismatch}; was it made by another version?")
    model.load_state_dict(state, strict=False)


register_loader(CHECKPOINT_FORMAT, load_trained_model)
