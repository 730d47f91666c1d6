"""``masksam train``: plan the dataset if needed, then train one fold (single process or under torchrun)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import typer

from masksam.cli.dataset_argument import DATASET_HELP, DATASET_ID_HELP, dataset_of
from masksam.errors import ConfigError, Interrupted

# In the plans folder while rank 0 plans and preprocesses for a training run: the other ranks wait until it is gone.
PLANNING_MARKER = ".planning"

FOLD_HELP = (
    "Fold of splits_final.json (0..4 by default); all (same as -1, nnU-Net's 'all') trains on every case without "
    "validation, into fold_all."
)


def parse_fold(text: str) -> int:
    """``--fold``: a fold number, or ``all`` (nnU-Net's name) for -1, every case.

    Raises:
        typer.BadParameter: Neither (a usage error naming the option).
    """
    if str(text).strip().lower() == "all":
        return -1
    try:
        fold = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a fold number (0, 1, ...) or 'all'") from None
    if fold < -1:
        raise typer.BadParameter(f"{fold} is not a fold; choose 0, 1, ... or all (-1)")
    return fold


def train(
    ctx: typer.Context,
    dataset_dir: Path = typer.Argument(None, help=DATASET_HELP, show_default=False),
    dataset_id: str = typer.Option(None, "-d", "--dataset", help=DATASET_ID_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Model folder; one fold_F sub-folder per fold."),
    plans_dir: Path = typer.Option(
        None,
        "--plans",
        help="Plans and preprocessed cache folder, shared with 'masksam plan' and other runs (default: "
        "$MASKSAM_PREPROCESSED/DATASET_FOLDER_NAME, or ./masksam_preprocessed/DATASET_FOLDER_NAME; planned there "
        "if missing, its cache reused if made for its plans).",
    ),
    fold: int = typer.Option(0, "--fold", "-f", parser=parse_fold, metavar="FOLD", help=FOLD_HELP),
    backbone: str = typer.Option("lite_medsam", "--backbone", "-b", help="lite_medsam, vit_b, vit_l, vit_h or tiny."),
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="Official backbone weights (default: the cached download; tiny: random)."
    ),
    preset: str = typer.Option(None, "--preset", "-p", help="Adapter/prompt settings: acdc, synapse, amos, tiny."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs (default 100; with --continue: extend to)."),
    iterations: int = typer.Option(None, "--iters-per-epoch", min=1, help="Optimiser steps per epoch (default 250)."),
    time_budget: float = typer.Option(
        None,
        "--time-budget",
        help="Minutes of training in all; epochs (and iterations) are fitted after timing steps. With --continue "
        "the minutes already trained count: give more (or none) to finish a run its budget stopped.",
    ),
    resume: bool = typer.Option(False, "--continue", help="Resume from the fold's checkpoint_latest.pt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: str = typer.Option(
        "auto", "--amp", help="auto (bf16/fp16 on GPU; on CPU bf16 if measured fast, else off), bf16, fp16 or off."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of data order, sampling and initialisation."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Global batch (default: the plans')."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd."),
    learning_rate: float = typer.Option(
        2e-3, "--lr", help="Initial learning rate of the prompting parts (adapters: half of it); poly decay."
    ),
    num_workers: int = typer.Option(2, "--num-workers", "-j", min=0, help="Data-loading processes per GPU/process."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads (default: 1 or every core, whichever a quick probe finds faster)."
    ),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Recompute encoder blocks in backward (saves GPU memory)."
    ),
    validation_patches: int = typer.Option(16, "--val-patches", min=0, help="Patches scored each epoch."),
    final_validation: bool = typer.Option(
        True, "--final-validation/--no-final-validation", help="Predict the validation cases after training."
    ),
    prompt_mode: str = typer.Option("generated", "--prompt-mode", help="generated (prompt-free) or ground_truth."),
    queries: str = typer.Option(
        "class_slots",
        "--queries",
        help="class_slots (one query per foreground class, no matching) or matched (the paper's N queries).",
    ),
    image_size: int = typer.Option(
        None, "--image-size", help="Backbone input side (default: 128 for lite_medsam, else nearest the patch)."
    ),
    train_backbone: bool = typer.Option(
        None,
        "--train-backbone/--freeze-backbone",
        help="Train SAM's own weights too (default: only for tiny, whose weights are random; MaskSAM freezes them).",
    ),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        # The backslash keeps rich from taking [tensorboard] for markup (it printed: pip install 'masksam').
        help="Also write the epoch metrics as TensorBoard logs into fold_F/tensorboard (pip install "
        "'masksam\\[tensorboard]').",
    ),
    config_file: Path = typer.Option(
        None,
        "--config",
        help="YAML/JSON file with 'model' and 'training' sections (e.g. a run's fold_F/config.yaml); options given "
        "here override it.",
    ),
) -> None:
    """Train MaskSAM on one fold; writes checkpoints, config.yaml, metrics.csv, progress.png and training_log.txt."""
    options = dict(locals())  # the parameters, given or defaulted (before any other local name exists)
    # The dataset first: a usage error should not wait for torch and the trainer to import.
    dataset_dir = options["dataset_dir"] = dataset_of(ctx, dataset_dir, dataset_id)  # the folder, also to resume with
    from masksam.data.loader import read_split
    from masksam.data.locations import training_plans_dir
    from masksam.data.plans import Plans
    from masksam.training import checkpoint as ckpt
    from masksam.training.config import TrainingConfig
    from masksam.training.distributed import DistributedContext, init_distributed, shutdown_distributed
    from masksam.training.run_settings import RUN_SETTINGS_FILE, read_run_settings, write_run_settings
    from masksam.training.setup import backbone_weights_for
    from masksam.training.trainer import Trainer

    if resume and config_file is not None:
        raise ConfigError(f"{config_file}: --config starts a new run; --continue takes the run's own settings")
    run_file = read_run_settings(config_file) if config_file is not None else {"model": {}, "training": {}}

    def given(parameter: str) -> bool:
        # By name: typer may run its own vendored copy of click, whose ParameterSource is another enum.
        source = ctx.get_parameter_source(parameter)
        return source is not None and source.name == "COMMANDLINE"

    from masksam.devices import resolve_device

    resolve_device(device)  # a device this machine lacks is refused before any planning
    context = DistributedContext()  # until the process group is joined, after planning
    fold_dir, training_config, stage = ckpt.fold_dir(output, fold), None, "setup"
    try:
        plans_dir = training_plans_dir(dataset_dir, output, plans_dir)
        prepare_before_joining(dataset_dir, plans_dir, rank=int(os.environ.get("RANK", "0")))
        context = init_distributed(device)
        plans = Plans.load(plans_dir)
        if resume:
            fold_dir = ckpt.fold_dir(output, fold)
            latest = ckpt.checkpoint_path(fold_dir, "latest")
            payload = ckpt.read_checkpoint(latest)
            model_config = _model_config(payload)
            training_config = replace(
                TrainingConfig.from_dict(payload["training_config"]),
                time_budget_minutes=time_budget,
                num_workers=num_workers,
                threads=threads,
                final_validation=final_validation,
            )
            if training_was_complete(payload, extend_to_epochs=epochs):
                wanted = final_validation and TrainingConfig.from_dict(payload["training_config"]).final_validation
                validation_pending = wanted and not validation_is_done(fold_dir, training_config.fold)
                if context.is_main:
                    print(what_complete_run_does(fold_dir, payload["epoch"], validation_pending, output))
                if not validation_pending:
                    return
            weights = ckpt.resolve_backbone_weights(payload["backbone_source"], checkpoint, latest)
        else:
            model_config, training_config = _settings_of_new_run(plans, run_file, str(config_file), options, given)
            fold_dir = ckpt.fold_dir(output, training_config.fold)
            if ckpt.checkpoint_path(fold_dir, "latest").is_file():
                raise ConfigError(
                    f"{fold_dir} already holds a training run; pass --continue to resume it or choose another -o"
                )
            read_split(plans_dir, training_config.fold)  # a fold the splits lack is refused before fold_F exists
            weights = backbone_weights_for(model_config.backbone, checkpoint)
            if context.is_main:
                write_run_settings(fold_dir / RUN_SETTINGS_FILE, model_config, training_config)
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
        stage = "training"
        trainer.fit(resume=resume, extend_to_epochs=epochs if resume else None)
        stage = "validation"
        if training_config.final_validation:
            trainer.validate_cases(dataset_dir)
    except KeyboardInterrupt:
        if not context.is_main:
            raise Interrupted() from None  # rank 0 says what was kept
        fold_of_run = fold if training_config is None else training_config.fold
        raise Interrupted(
            what_training_kept(
                fold_dir,
                stage=stage,
                save_every=1 if training_config is None else training_config.save_every,
                resume_command=resume_command(options, fold_of_run),
            )
        ) from None
    finally:
        shutdown_distributed(context)


def training_was_complete(payload: dict, *, extend_to_epochs: int | None) -> bool:
    """Whether a checkpoint's run had trained every epoch of its schedule (and ``--epochs`` asks for no more)."""
    epochs = payload["schedule"]["epochs"]
    return payload["epoch"] >= epochs and (extend_to_epochs is None or extend_to_epochs <= epochs)


def validation_is_done(fold_dir: Path, fold: int) -> bool:
    """The final validation wrote its summary (``fold_all`` has no validation cases, so nothing to do)."""
    return fold == -1 or (fold_dir / "validation" / "summary.json").is_file()


def what_complete_run_does(fold_dir: Path, epochs: int, validation_pending: bool, output: Path) -> str:
    """The line ``train --continue`` prints for a run that had trained every epoch."""
    done = f"training was complete: {fold_dir} trained all {epochs} epochs (checkpoint_final.pt)"
    if validation_pending:
        return f"{done}; running the final validation, which had not finished"
    return (
        f"{done}; nothing to resume. To train longer pass --epochs N (more than {epochs}) with --continue; "
        f"to predict: masksam predict -i IMAGES -o OUTPUT -m {output}"
    )


def resume_command(options: dict, fold: int) -> str:
    """``masksam train DATASET -o OUTPUT --fold F ... --continue``: the options that find and run the fold again.

    The run's settings come from its checkpoint, so only where it is (dataset, output, fold, plans) and where it
    runs (device, backbone weights) are repeated; ``--config`` is left out (``--continue`` refuses it).
    """
    words = ["masksam", "train", str(options["dataset_dir"]), "-o", str(options["output"]), "--fold", str(fold)]
    if options["plans_dir"] is not None:
        words += ["--plans", str(options["plans_dir"])]
    if options["checkpoint"] is not None:
        words += ["--checkpoint", str(options["checkpoint"])]
    if options["device"] != "auto":
        words += ["--device", options["device"]]
    return shlex.join([*words, "--continue"])


def what_training_kept(fold_dir: Path, *, stage: str, save_every: int, resume_command: str) -> str:
    """The one line printed after Ctrl-C: which checkpoint was kept and the command that goes on from it.

    Args:
        fold_dir: The fold's folder.
        stage: What was running: ``setup`` (planning, building), ``training`` or ``validation`` (after training).
        save_every: Epochs between writes of ``checkpoint_latest.pt``.
        resume_command: The command line that resumes the run.
    """
    from masksam.training import checkpoint as ckpt

    latest = ckpt.checkpoint_path(fold_dir, "latest")
    if stage == "validation" and ckpt.checkpoint_path(fold_dir, "final").is_file():
        return (
            f"training had finished (checkpoint_final.pt is in {fold_dir}); the final validation was cut short and "
            f"`{resume_command}` runs it again"
        )
    if latest.is_file():
        epoch = "finished" if save_every == 1 else "saved"
        return f"the last {epoch} epoch's checkpoint is in {fold_dir} ({latest.name}); `{resume_command}` resumes"
    return "no epoch had finished, so no checkpoint was kept; run the same command again to start over"


# Parameters of train() that set a TrainingConfig field, and the field.
_TRAINING_OPTIONS = {
    "fold": "fold",
    "epochs": "epochs",
    "iterations": "iterations_per_epoch",
    "time_budget": "time_budget_minutes",
    "batch_size": "batch_size",
    "optimizer": "optimizer",
    "learning_rate": "learning_rate",
    "amp": "amp",
    "compile_model": "compile",
    "gradient_checkpointing": "gradient_checkpointing",
    "validation_patches": "validation_patches",
    "final_validation": "final_validation",
    "num_workers": "num_workers",
    "threads": "threads",
    "seed": "seed",
    "tensorboard": "tensorboard",
}


def _settings_of_new_run(plans, run_file: dict, where: str, options: dict, given):
    """(MaskSamConfig, TrainingConfig) of a new run.

    Precedence, lowest first: the defaults, the preset and the plans, the ``--config`` file, the options given on
    the command line (``given(parameter)``; ``options`` holds every parameter's value).
    """
    from masksam.training.config import TrainingConfig
    from masksam.training.run_settings import check_fits_plans, override_model, override_training
    from masksam.training.setup import model_config_for

    backbone = options["backbone"] if given("backbone") else run_file["model"].get("backbone", options["backbone"])
    model_config = model_config_for(
        plans,
        backbone=backbone,
        preset=options["preset"],
        queries=options["queries"] if given("queries") else run_file["model"].get("queries", options["queries"]),
        image_size=options["image_size"],
    )
    model_config = override_model(model_config, run_file["model"], where)
    cli_model = {name: options[name] for name in ("prompt_mode", "train_backbone") if given(name)}
    model_config = override_model(model_config, cli_model, "command line")
    check_fits_plans(model_config, plans, where)
    training_config = override_training(TrainingConfig(), run_file["training"], where)
    cli_training = {field: options[name] for name, field in _TRAINING_OPTIONS.items() if given(name)}
    return model_config, override_training(training_config, cli_training, "command line")


def _model_config(payload: dict):
    from masksam.model.config import MaskSamConfig

    return MaskSamConfig.from_dict(payload["model_config"])


def planning_needed(plans_dir: Path) -> bool:
    """No plans yet, or a preparation that did not finish (its marker is still there)."""
    return not (plans_dir / "plans.json").is_file() or (plans_dir / PLANNING_MARKER).exists()


def prepare_before_joining(dataset_dir: Path, plans_dir: Path, *, rank: int, poll_seconds: float = 2.0) -> None:
    """Plans (once) and checks or fills the preprocessed cache on rank 0 before any process joins the process
    group; the other ranks wait by watching the plans folder.

    A collective (``dist.barrier``) would make them wait under the NCCL timeout (30 minutes), which preprocessing
    a large dataset can exceed. Rank 0 marks the folder while it works, and a marker left by an interrupted run
    makes the next rank 0 finish the work. A cache made for the plans is reused without a word; otherwise a line
    says what was preprocessed, and where.

    Args:
        dataset_dir: Raw dataset folder.
        plans_dir: Plans folder.
        rank: This process's global rank (``RANK`` from torchrun; 0 for a single process).
        poll_seconds: How often a waiting rank looks.
    """
    from masksam.data.pipeline import prepare_for_training

    if rank != 0:
        while planning_needed(plans_dir):
            time.sleep(poll_seconds)
        return
    if not (plans_dir / "plans.json").is_file():
        print(f"planning {dataset_dir} into {plans_dir} (once; later runs reuse it)")
    marker = plans_dir / PLANNING_MARKER
    plans_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    prepared = prepare_for_training(dataset_dir, plans_dir, progress=sys.stderr.isatty())
    if prepared.action != "reused":
        print(prepared.describe(), flush=True)
    marker.unlink()
