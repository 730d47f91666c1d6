"""Typed training settings (DESIGN §5), saved next to every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from masksam.errors import ConfigError

Optimizer = Literal["adamw", "sgd"]
Amp = Literal["auto", "bf16", "fp16", "off"]
BoxInit = Literal["spread", "dataset"]


@dataclass(frozen=True)
class TrainingConfig:
    """How one fold is trained.

    Attributes:
        fold: Fold of ``splits_final.json`` (-1: every case, no validation).
        epochs: Planned epochs (the poly schedule spans ``epochs * iterations_per_epoch`` steps).
        iterations_per_epoch: Optimiser steps per epoch.
        time_budget_minutes: Wall-clock budget of this run; epochs (and, if needed, iterations) are fitted to it
            after timing the first steps. None: no budget.
        batch_size: Global batch (split over DDP ranks); None: the plans' batch size.
        optimizer: ``adamw`` (default) or ``sgd`` (Nesterov, momentum 0.99, as nnU-Net).
        learning_rate: Initial learning rate of the prompt generator, classifier tokens and class head (the
            adapters inside SAM train at ``adapter_lr_scale`` of it: 1e-3 by default, the paper's rate).
        weight_decay: Weight decay.
        momentum: SGD momentum.
        poly_exponent: lr = lr0 * (1 - step / total) ** exponent.
        grad_clip: Max gradient norm.
        amp: Mixed precision: ``auto`` (bf16 on GPUs that support it, fp16 + scaler on older ones; on a CPU bf16
            where a bf16 matmul was measured at least 2× faster than fp32, else off), ``bf16``, ``fp16``, ``off``.
        compile: Wrap the model in ``torch.compile``.
        gradient_checkpointing: Recompute encoder blocks in backward (less GPU memory, more time).
        validation_patches: Fixed validation patches scored every epoch (pseudo-Dice).
        final_validation: Predict the fold's validation cases with the sliding window after the last epoch.
        num_workers: Data-loading worker processes per rank.
        augment: nnU-Net-style augmentation on.
        seed: Seed of everything random (data, points, initialisation).
        save_every: Write ``checkpoint_latest.pt`` every this many epochs (always after the last).
        tensorboard: Also write each epoch's metrics to TensorBoard in ``fold_F/tensorboard`` (needs the
            tensorboard package: the ``tensorboard`` extra).
        warmup_steps: Linear learning-rate warm-up over the first steps (0: none), then poly decay.
        adapter_lr_scale: Learning rate of the adapters and depth tables inside SAM (and of SAM's own weights
            when trained) as a multiple of ``learning_rate``; the prompt generator, the classifier tokens, the
            class head, the modality adapter and the mask-prompt gate train at ``learning_rate``.
        denoising_groups: Denoising queries per class and slice (training only; 0: none).
        denoising_box_jitter: Largest move of a denoising box's edge, as a share of the box's side.
        denoising_mask_flip: Share of a denoising mask prompt's pixels flipped.
        aux_mask_weight: Weight of the auxiliary masks' BCE and of their Dice (DESIGN §4: 0.5 each). The boxes that
            prompt SAM come from these masks, so a larger weight makes the prompts informative sooner.
        threads: CPU intra-op threads; None: the faster of one and every core, measured when the run starts.
        encoder_adapters_from: Share of the schedule's steps after which the image encoder's adapters (and depth
            table) start training; before that the encoder runs without autograd (cheaper steps; the adapters are
            zero-initialised, so the encoder computes SAM's own features). 0: from the first step; 1: never.
        box_init: Where the queries' learned boxes start: ``spread`` over the image, or ``dataset``: class-slot
            query k at the median box of class k in the training labels (matched queries stay spread).
    """

    fold: int = 0
    epochs: int = 100
    iterations_per_epoch: int = 250
    time_budget_minutes: float | None = None
    batch_size: int | None = None
    optimizer: Optimizer = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 3e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    amp: Amp = "auto"
    compile: bool = False
    gradient_checkpointing: bool = False
    validation_patches: int = 16
    final_validation: bool = True
    num_workers: int = 2
    augment: bool = True
    seed: int = 0
    save_every: int = 1
    tensorboard: bool = False
    # DESIGN §10's remedies for learning in hundreds of steps (benchmarks/learning_curves.py measures each).
    warmup_steps: int = 20
    adapter_lr_scale: float = 0.5
    denoising_groups: int = 1
    denoising_box_jitter: float = 0.05
    denoising_mask_flip: float = 0.05
    box_init: BoxInit = "dataset"
    encoder_adapters_from: float = 0.5
    threads: int | None = None
    aux_mask_weight: float = 1.5

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer '{self.optimizer}' is unknown; choose adamw or sgd")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp '{self.amp}' is unknown; choose auto, bf16, fp16 or off")
        for name in ("epochs", "iterations_per_epoch", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.box_init not in ("spread", "dataset"):
            raise ConfigError(f"box_init '{self.box_init}' is unknown; choose spread or dataset")
        if not 0.0 <= self.encoder_adapters_from <= 1.0:
            raise ConfigError(f"encoder_adapters_from must lie in [0, 1] (got {self.encoder_adapters_from})")
        for name in ("warmup_steps", "denoising_groups"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0 (got {getattr(self, name)})")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ConfigError(f"time budget must be positive (got {self.time_budget_minutes} minutes)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"training config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)
