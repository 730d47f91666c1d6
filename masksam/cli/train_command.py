"""``masksam train``: plan the dataset if needed, then train one fold (single process or under torchrun)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import typer

from masksam.errors import ConfigError


def train(
    dataset_dir: Path = typer.Argument(..., help="nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model folder; one fold_F sub-folder per fold."),
    plans_dir: Path = typer.Option(
        None, "--plans", help="Plans folder from 'masksam plan' (default: OUTPUT/plans, planned here if missing)."
    ),
    fold: int = typer.Option(0, "--fold", "-f", help="Fold of splits_final.json; -1 trains on every case."),
    backbone: str = typer.Option("lite_medsam", "--backbone", "-b", help="lite_medsam, vit_b, vit_l, vit_h or tiny."),
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="Official backbone weights (default: the cached download; tiny: random)."
    ),
    preset: str = typer.Option(None, "--preset", "-p", help="Adapter/prompt settings: acdc, synapse, amos, tiny."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs (default 100; with --continue: extend to)."),
    iterations: int = typer.Option(None, "--iters-per-epoch", min=1, help="Optimiser steps per epoch (default 250)."),
    time_budget: float = typer.Option(
        None, "--time-budget", help="Minutes for this run; epochs (and iterations) are fitted after timing steps."
    ),
    resume: bool = typer.Option(False, "--continue", help="Resume from the fold's checkpoint_latest.pt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16/fp16 on GPU, off on CPU), bf16, fp16 or off."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order, sampling and initialisation."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Global batch (default: the plans')."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Initial learning rate (poly decay)."),
    num_workers: int = typer.Option(2, "--num-workers", "-j", min=0, help="Data-loading processes per GPU/process."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Recompute encoder blocks in backward (saves GPU memory)."
    ),
    validation_patches: int = typer.Option(16, "--val-patches", min=0, help="Patches scored each epoch."),
    final_validation: bool = typer.Option(
        True, "--final-validation/--no-final-validation", help="Predict the validation cases after training."
    ),
    prompt_mode: str = typer.Option("generated", "--prompt-mode", help="generated (prompt-free) or ground_truth."),
    train_backbone: bool = typer.Option(
        None,
        "--train-backbone/--freeze-backbone",
        help="Train SAM's own weights too (default: only for tiny, whose weights are random; MaskSAM freezes them).",
    ),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Also write the epoch metrics as TensorBoard logs into fold_F/tensorboard (pip install "
        "'masksam[tensorboard]').",
    ),
) -> None:
    """Train MaskSAM on one fold; writes checkpoints, metrics.csv, progress.png and training_log.txt."""
    from masksam.data.plans import Plans
    from masksam.training import checkpoint as ckpt
    from masksam.training.config import TrainingConfig
    from masksam.training.distributed import init_distributed, shutdown_distributed
    from masksam.training.setup import backbone_weights_for, model_config_for
    from masksam.training.trainer import Trainer

    context = init_distributed(device)
    try:
        plans_dir = plans_dir or output / "plans"
        if not (plans_dir / "plans.json").is_file():
            _plan(dataset_dir, plans_dir, context)
        plans = Plans.load(plans_dir)
        fold_dir = ckpt.fold_dir(output, fold)
        latest = ckpt.checkpoint_path(fold_dir, "latest")
        if resume:
            payload = ckpt.read_checkpoint(latest)
            model_config = _model_config(payload)
            training_config = replace(
                TrainingConfig.from_dict(payload["training_config"]),
                time_budget_minutes=time_budget,
                num_workers=num_workers,
                final_validation=final_validation,
            )
            weights = ckpt.resolve_backbone_weights(payload["backbone_source"], checkpoint, latest)
        else:
            if latest.is_file():
                raise ConfigError(
                    f"{fold_dir} already holds a training run; pass --continue to resume it or choose another -o"
                )
            model_config = model_config_for(
                plans, backbone=backbone, preset=preset, prompt_mode=prompt_mode, train_backbone=train_backbone
            )
            training_config = TrainingConfig(
                fold=fold,
                epochs=epochs or 100,
                iterations_per_epoch=iterations or 250,
                time_budget_minutes=time_budget,
                batch_size=batch_size,
                optimizer=optimizer,
                learning_rate=learning_rate,
                amp=amp,
                compile=compile_model,
                gradient_checkpointing=gradient_checkpointing,
                validation_patches=validation_patches,
                final_validation=final_validation,
                num_workers=num_workers,
                seed=seed,
                tensorboard=tensorboard,
            )
            weights = backbone_weights_for(backbone, checkpoint)
        trainer = Trainer(
            model_config=model_config,
            training_config=training_config,
            plans=plans,
            plans_dir=plans_dir,
            output_dir=output,
            backbone_checkpoint=weights,
            context=context,
            show_progress=sys.stderr.isatty(),
        )
        trainer.fit(resume=resume, extend_to_epochs=epochs if resume else None)
        if training_config.final_validation:
            trainer.validate_cases(dataset_dir)
    finally:
        shutdown_distributed(context)


def _model_config(payload: dict):
    from masksam.model.config import MaskSamConfig

    return MaskSamConfig.from_dict(payload["model_config"])


def _plan(dataset_dir: Path, plans_dir: Path, context) -> None:
    """Plans and preprocesses on rank 0 while the other ranks wait."""
    import torch.distributed as dist

    from masksam.data.pipeline import plan_and_preprocess

    if context.is_main:
        print(f"planning {dataset_dir} into {plans_dir} (once; later runs reuse it)")
        plan_and_preprocess(dataset_dir, plans_dir, progress=sys.stderr.isatty())
    if context.is_distributed:
        dist.barrier()
