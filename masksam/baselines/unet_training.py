"""Training the baseline U-Net with MaskSAM's own trainer: same data, augmentation, schedule, budget and logs.

:class:`UNetTrainer` is a :class:`~masksam.training.trainer.Trainer` variant (nnU-Net style: a small subclass
overriding hooks). Inherited unchanged: the loader (``build_loader``: the network's patch, which is the plans'
in 3-D and one slice of nnU-Net's 2-D patch in 2-D; the batch; nnU-Net-style augmentation, foreground
oversampling, per-epoch seeding), the loop (``fit``/``run_epoch``), fitting a time budget (``plan_budget``),
the moving-average pseudo-Dice and best checkpoint, ``metrics.csv``, ``training_log.txt`` and
``progress.png``. Overridden: the network, loss (with deep supervision where configured), optimiser
parameters, train step, validation step, and the checkpoint contents (the U-Net model file of
:mod:`masksam.baselines.unet_checkpoint`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masksam.baselines.unet import (
    DeepSupervisionLoss,
    DiceCrossEntropyLoss,
    UNet,
    UNetConfig,
    require_monai,
    unet_config_for,
)
from masksam.baselines.unet_checkpoint import TrainedUNet, load_unet_state, read_unet_file, unet_payload
from masksam.data.loader import read_split
from masksam.data.plans import Plans
from masksam.errors import CheckpointError, ConfigError
from masksam.training import checkpoint as ckpt
from masksam.training.compilation import compile_network
from masksam.training.config import TrainingConfig
from masksam.training.distributed import DistributedContext, init_distributed, shutdown_distributed
from masksam.training.optim import build_optimizer
from masksam.training.trainer import Trainer

# nnU-Net's SGD learning rate; AdamW uses TrainingConfig's 1e-3 (MaskSAM's).
SGD_LEARNING_RATE = 1e-2


class UNetTrainer(Trainer):
    """Trains one fold of the baseline U-Net into ``output_dir/fold_F`` (files as MaskSAM's trainer writes).

    Args:
        unet_config: The network (its patch size is the one the loader samples).
        training_config: Optimisation, schedule, budget, logging (as for MaskSAM).
        plans: Plans of the preprocessed dataset.
        plans_dir: Folder with plans.json, splits_final.json and the cache.
        output_dir: Model folder (``fold_F`` sub-folders).
        context: Rank and device of this process.
        show_progress: Draw a progress bar per epoch (rank 0).
    """

    # Float32 on every CPU under ``amp auto``: the U-Net is all convolutions, and oneDNN's bf16 3-D convolution
    # gradients hung on an AMX CPU (`masksam.backbones.common.cpu_conv3d_region`); its ACDC rows ran in float32.
    cpu_auto_bf16 = False

    def __init__(
        self,
        *,
        unet_config: UNetConfig,
        training_config: TrainingConfig,
        plans: Plans,
        plans_dir: Path,
        output_dir: Path,
        context: DistributedContext = DistributedContext(),
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            model_config=unet_config,  # the Trainer reads patch_size (and a name for its logs) from it
            training_config=training_config,
            plans=plans,
            plans_dir=plans_dir,
            output_dir=output_dir,
            backbone_checkpoint=None,
            context=context,
            show_progress=show_progress,
        )

    # ---- hooks -------------------------------------------------------------------------------------------

    def build_model(self, backbone_checkpoint: Path | None) -> UNet:
        return UNet(self.model_config).to(self.context.device).train()

    def wrap_model(self, model: UNet) -> nn.Module:
        network: nn.Module = model
        if self.context.is_distributed:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        if self.config.compile:
            network = compile_network(network)
        return network

    def build_criterion(self) -> nn.Module:
        loss = DiceCrossEntropyLoss(batch_dice=self.model_config.batch_dice)
        if self.model_config.supervised_heads:
            return DeepSupervisionLoss(loss, self.model_config.deep_supervision_weights())
        return loss

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.model.parameters(), self.config)

    def train_step(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        """One optimiser step on a batch: image (B, C, T, H, W), label (B, T, H, W). Returns the loss terms.

        With deep supervision the terms are the weighted sums over the supervised outputs (nnU-Net's loss).
        """
        device = self.context.device
        image = image.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True).long()  # travels as the loader's small integer type
        with self.precision.autocast():
            logits = self.network(image)  # (B, K, T, H, W); deep supervision: (B, S, K, T, H, W)
        terms = self.criterion(logits, label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {key: float(value.detach()) for key, value in terms.items()}

    def validation_batch(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dice + CE loss and the argmax of the logits (B, T, H, W) (evaluation mode: the final output only)."""
        with self.precision.autocast():
            logits = self.model(image)  # (B, K, T, H, W)
        return self.criterion(logits, label)["total"], logits.argmax(dim=1)

    def initialise_boxes(self) -> None:
        """A U-Net has no prompt queries whose boxes could start anywhere."""

    def pause_encoder_adapters(self, force_on: bool = False) -> bool:
        """A U-Net has no frozen encoder whose adapters could pause."""
        return False

    def model_title(self) -> str:
        return f"U-Net baseline ({self.model_config.configuration})"

    def validation_predictor(self):
        from masksam.baselines.unet_inference import UNetPredictor

        final = TrainedUNet(self.model, self.plans, {}, ckpt.checkpoint_path(self.fold_dir, "final"))
        return UNetPredictor([final], device=self.context.device, tta=False, amp=self.precision.amp)

    # ---- checkpoints -------------------------------------------------------------------------------------

    def save(self, name: str) -> None:
        """``checkpoint_latest.pt`` holds everything a resume needs; best and final are model files.

        AdamW's two moments double a from-scratch network's file (nnU-Net-sized ACDC U-Net: 121 MB of
        weights, 363 MB with them), and only a resume reads them.
        """
        payload = self.state_dict() if name == "latest" else self.model_file_payload()
        ckpt.save_atomic(payload, ckpt.checkpoint_path(self.fold_dir, name))

    def model_file_payload(self) -> dict[str, Any]:
        """The U-Net model file (config, plans, weights) with the run's settings and history for reference."""
        payload = self.model_payload()
        payload.update(training_config=self.config.to_dict(), epoch=self.state.epoch, history=self.state.history)
        return payload

    def model_payload(self) -> dict[str, Any]:
        return unet_payload(self.model, self.plans)

    def load_model_payload(self, payload: dict[str, Any], path: Path) -> None:
        saved = UNetConfig.from_dict(payload["unet_config"])
        if saved != self.model_config:
            raise CheckpointError(
                f"{path}: trained for another U-Net ({saved} vs now {self.model_config}); start a new output folder"
            )
        load_unet_state(self.model, payload["state"], path)

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return read_unet_file(path)

    def log_start(self) -> None:
        config = self.model_config
        parameters = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"training the U-Net baseline ({config.configuration}, {parameters / 1e6:.2f}M parameters; channels "
            f"{list(config.channels)}, kernels {[list(k) for k in config.kernel_sizes]}, strides "
            f"{[list(s) for s in config.strides]}, deep supervision weights "
            f"{[round(w, 3) for w in config.deep_supervision_weights()]}) on "
            f"{self.plans.dataset_name} fold {self.config.fold}: {len(self.train_ids)} training / "
            f"{len(self.val_ids)} validation cases, patch {'×'.join(map(str, config.patch_size))}, batch "
            f"{self.batch_per_rank * self.context.world_size} on {self.context.world_size} × "
            f"{self.context.device.type}, precision {self.precision.name}, {self.config.optimizer} lr "
            f"{self.config.learning_rate:g}"
        )


def train_unet(
    plans_dir: Path,
    output_dir: Path,
    *,
    fold: int = 0,
    minutes: float | None = None,
    epochs: int | None = None,
    iterations_per_epoch: int = 250,
    seed: int = 0,
    num_workers: int = 2,
    device: str = "cpu",
    batch_size: int | None = None,
    optimizer: str = "adamw",
    learning_rate: float | None = None,
    validation_patches: int = 16,
    configuration: str = "3d_fullres",
    unet_config: UNetConfig | None = None,
    dataset_dir: Path | None = None,
    resume: bool = False,
    show_progress: bool = False,
) -> Path:
    """Trains the from-scratch U-Net baseline on one fold, with MaskSAM's data pipeline and time budget.

    Same as ``masksam train``: the plans' patch and batch, augmentation, foreground oversampling, seeding,
    poly schedule over epochs × iterations fitted to ``minutes`` after timing the first steps, validation
    patches, logs and checkpoints in ``OUTPUT_DIR/fold_F``. Optimiser: AdamW, lr 1e-3, weight decay 3e-5,
    poly decay, gradient clipping 12 — MaskSAM's settings, so the comparison differs in the model only.
    nnU-Net trains its U-Net with SGD (lr 1e-2, Nesterov momentum 0.99) over 1000 × 250 steps; in short budgets
    AdamW is the usual choice for a from-scratch net and no measurement here showed SGD to be better, so it is
    available (``optimizer="sgd"``, default lr 1e-2) but not the default.

    Args:
        plans_dir: Folder from ``masksam plan`` (plans.json, splits_final.json, cache).
        output_dir: Model folder; files go to ``OUTPUT_DIR/fold_F``.
        fold: Fold of splits_final.json (-1: every case, no validation).
        minutes: Wall-clock budget of the training loop (None: the full schedule).
        epochs: Planned epochs (default 100; with ``resume``: extend the saved schedule to this many).
        iterations_per_epoch: Optimiser steps per epoch.
        seed: Seed of data order, augmentation and initialisation.
        num_workers: Data-loading processes.
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: Global batch (default: the configuration's planned batch, else the plans'; ``2d`` plans
            nnU-Net's batch for an 8 GB GPU, 56 for ACDC: pass a smaller one on a CPU).
        optimizer: ``adamw`` or ``sgd``.
        learning_rate: Initial learning rate (default 1e-3 for AdamW, 1e-2 for SGD).
        validation_patches: Patches scored after every epoch (pseudo-Dice).
        configuration: ``3d_fullres`` or ``2d`` (see :mod:`masksam.baselines.unet`), when ``unet_config`` is None.
        unet_config: The network (default: :func:`~masksam.baselines.unet.unet_config_for` the plans).
        dataset_dir: Raw dataset; when given, the fold's validation cases are predicted after training and
            scored into ``fold_F/validation/summary.json`` (as ``masksam train`` does).
        resume: Continue the run in ``OUTPUT_DIR/fold_F`` from ``checkpoint_latest.pt``.
        show_progress: Progress bar per epoch.

    Returns:
        The model file, ``OUTPUT_DIR/fold_F/checkpoint_final.pt`` (for ``predict_unet``).

    Raises:
        ConfigError: MONAI missing, bad settings, or the fold folder already holds a run (without ``resume``).
        CheckpointError: ``resume`` without a readable U-Net ``checkpoint_latest.pt``.
    """
    require_monai()
    plans_dir, output_dir = Path(plans_dir), Path(output_dir)
    plans = Plans.load(plans_dir)
    fold_dir = ckpt.fold_dir(output_dir, fold)
    latest = ckpt.checkpoint_path(fold_dir, "latest")
    if resume:
        payload = read_unet_file(latest)
        config = UNetConfig.from_dict(payload["unet_config"])
        training_config = replace(
            TrainingConfig.from_dict(payload["training_config"]),
            time_budget_minutes=minutes,
            num_workers=num_workers,
            final_validation=dataset_dir is not None,
        )
    else:
        if latest.is_file():
            raise ConfigError(
                f"{fold_dir} already holds a training run; resume it (resume=True) or choose another folder"
            )
        if optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer '{optimizer}' is unknown; choose adamw or sgd")
        if unet_config is None:
            train_ids, val_ids = read_split(plans_dir, 0)  # all cases: nnU-Net caps the 2-D batch by the dataset
            unet_config = unet_config_for(plans, configuration=configuration, num_cases=len(train_ids) + len(val_ids))
        config = unet_config
        training_config = TrainingConfig(
            fold=fold,
            epochs=epochs or 100,
            iterations_per_epoch=iterations_per_epoch,
            time_budget_minutes=minutes,
            batch_size=batch_size if batch_size is not None else config.batch_size,
            optimizer=optimizer,
            learning_rate=learning_rate or (SGD_LEARNING_RATE if optimizer == "sgd" else 1e-3),
            validation_patches=validation_patches,
            final_validation=dataset_dir is not None,
            num_workers=num_workers,
            seed=seed,
            warmup_steps=0,  # nnU-Net's schedule: poly decay from the first step
        )
    context = init_distributed(device)
    try:
        trainer = UNetTrainer(
            unet_config=config,
            training_config=training_config,
            plans=plans,
            plans_dir=plans_dir,
            output_dir=output_dir,
            context=context,
            show_progress=show_progress,
        )
        trainer.fit(resume=resume, extend_to_epochs=epochs if resume else None)
        if dataset_dir is not None:
            trainer.validate_cases(dataset_dir)
    finally:
        shutdown_distributed(context)
    return ckpt.checkpoint_path(fold_dir, "final")
