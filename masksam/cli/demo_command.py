"""``masksam demo``: the whole workflow on a built-in phantom dataset, in a few minutes on a CPU.

Writes synthetic cardiac phantoms (nnU-Net layout), plans them, trains MaskSAM under a time budget, predicts
the held-out phantoms, evaluates them, and draws overlays and the training curves.

Which backbone: the real, frozen LiteMedSAM when its weights can be had and the budget gives it enough steps.
On a GPU it always does. On a CPU a LiteMedSAM step takes seconds (2.5-5 s at the demo's patch on two cores), so
the demo times a few steps first and trains LiteMedSAM only if the budget then holds at least
``DEMO_MIN_LITE_MEDSAM_STEPS`` of them; otherwise it trains the small ``tiny`` backbone from scratch (SAM's
weights included, ~0.3 s a step) and, when LiteMedSAM's weights can be had, also segments the held-out
phantoms with LiteMedSAM from ground-truth boxes (zero-shot, the paper's "MedSAM bbox" reference) so the real
backbone is shown at work.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import typer

# (T, H, W) patch and queries of the demo: small enough to train in minutes on two CPU cores.
DEMO_PATCH = (2, 128, 128)
DEMO_QUERIES = 4
# Steps LiteMedSAM needs to beat tiny from scratch on the phantoms (measured in 4 minutes, README "What the demo
# trains": ~50 steps reached tiny's Dice; 77 steps gave 0.95 against tiny's 0.82, 36 steps 0.38 against 0.77).
DEMO_MIN_LITE_MEDSAM_STEPS = 60
# LiteMedSAM's input side for the zero-shot reference: the phantoms are 128² (measured: same box Dice as 256²).
_DEMO_BOX_PROMPT_SIZE = 128


def demo(
    output: Path = typer.Option(Path("masksam_demo"), "--output", "-o", help="Folder for everything the demo writes."),
    minutes: float = typer.Option(4.0, "--minutes", help="Training time budget in minutes."),
    backbone: str = typer.Option(
        "auto",
        "--backbone",
        "-b",
        help="auto (LiteMedSAM if its weights can be fetched and, on a CPU, its timed steps fit the budget often "
        "enough; else tiny), lite_medsam, tiny.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantoms and of training."),
    reference: bool = typer.Option(
        True,
        "--reference/--no-reference",
        help="Also segment the held-out phantoms with LiteMedSAM from ground-truth boxes (when MaskSAM runs on tiny).",
    ),
) -> None:
    """Train, predict, evaluate and draw on built-in phantoms; prints the Dice table and where the files are."""
    from rich.console import Console

    from masksam.data.phantoms import write_phantom_dataset
    from masksam.data.pipeline import plan_and_preprocess
    from masksam.data.plans import Plans
    from masksam.devices import resolve_device
    from masksam.training.config import TrainingConfig
    from masksam.training.distributed import DistributedContext
    from masksam.training.setup import model_config_for
    from masksam.training.trainer import Trainer

    console = Console()
    started = time.monotonic()
    output = output.resolve()
    dataset = write_phantom_dataset(output / "Dataset900_CardiacPhantom", seed=seed)
    console.print(f"[bold]1/5 data[/]: synthetic cardiac phantoms (RV, MYO, LV) in nnU-Net layout at {dataset}")
    plans_dir = output / "plans"
    plan_and_preprocess(dataset, plans_dir, num_workers=0, progress=False)
    # A CPU-sized patch: two slices (enough for the depth adapters to mix) and one query per class.
    plans = replace(Plans.load(plans_dir), patch_size=DEMO_PATCH, num_queries=DEMO_QUERIES)
    plans.save(plans_dir / "plans.json")

    target = resolve_device(device)

    def make_trainer(chosen: str, weights: Path | None, model_dir: Path, budget_minutes: float) -> Trainer:
        if model_dir.exists():
            shutil.rmtree(model_dir)  # the demo's own earlier run; every run trains afresh
        return Trainer(
            model_config=model_config_for(plans, backbone=chosen),
            training_config=TrainingConfig(
                epochs=100,
                iterations_per_epoch=50,
                time_budget_minutes=budget_minutes,
                validation_patches=4,
                num_workers=1,
                seed=seed,
                final_validation=False,
            ),
            plans=plans,
            plans_dir=plans_dir,
            output_dir=model_dir,
            backbone_checkpoint=weights,
            context=DistributedContext(device=target),
            show_progress=sys.stderr.isatty(),
        )

    chosen, weights = _choose_backbone(backbone, console)
    if backbone == "auto" and chosen == "lite_medsam" and target.type == "cpu":
        deadline = time.monotonic() + 60 * minutes  # the probe's time counts against the budget
        if not _lite_medsam_fits(make_trainer(chosen, weights, output / "step_probe", minutes), deadline, console):
            chosen, weights = "tiny", None
        shutil.rmtree(output / "step_probe", ignore_errors=True)  # whatever the probe trainer wrote
        minutes = (deadline - time.monotonic()) / 60
    console.print(f"[bold]2/5 training[/] MaskSAM on {chosen} for about {minutes:.3g} minutes (progress below)")
    model_dir = output / "model"
    trainer = make_trainer(chosen, weights, model_dir, minutes)
    trainer.fit()

    predictions = output / "predictions"
    console.print(f"[bold]3/5 predicting[/] the held-out phantoms into {predictions}")
    _predict(trainer, dataset, predictions)
    console.print("[bold]4/5 evaluating[/] against their labels")
    summary = _evaluate(dataset, predictions, console, title=f"MaskSAM ({chosen}) on the held-out phantoms")
    reference_weights = _cached_lite_medsam(console) if reference and chosen != "lite_medsam" else None
    if reference_weights is not None:
        boxed = output / "predictions_litemedsam_gt_boxes"
        console.print(f"      and LiteMedSAM zero-shot from ground-truth boxes into {boxed}")
        _predict_from_boxes(dataset, boxed, reference_weights, plans, trainer.context.device)
        _evaluate(dataset, boxed, console, title="LiteMedSAM + ground-truth boxes (zero-shot; needs the labels)")
    pictures = output / "pictures"
    console.print(f"[bold]5/5 drawing[/] overlays into {pictures}")
    _draw(dataset, predictions, pictures, plans)

    fold = trainer.fold_dir
    console.print(f"\ndone in {(time.monotonic() - started) / 60:.1f} minutes. Where things are:")
    for what, where in (
        ("training curves", fold / "progress.png"),
        ("training log", fold / "training_log.txt"),
        ("model", fold / "checkpoint_final.pt"),
        ("predicted label maps", predictions),
        ("Dice / HD95 per case", summary),
        ("overlay pictures", pictures),
    ):
        console.print(f"  {what:>22}: {where}")
    console.print(
        f"Next: masksam predict -i YOUR_IMAGES -o OUT -m {model_dir} (phantom-trained: for trying the commands only)"
    )


def _lite_medsam_fits(probe, deadline: float, console) -> bool:
    """Whether the time left until ``deadline`` (``time.monotonic()``) holds ``DEMO_MIN_LITE_MEDSAM_STEPS``
    LiteMedSAM steps, timed on ``probe`` (a Trainer whose model the timing steps train, dropped afterwards) and
    planned as the budgeted run will plan them."""
    step_seconds = probe.probe_step_seconds()
    minutes = (deadline - time.monotonic()) / 60
    steps = probe.schedule_for_budget(60 * minutes, step_seconds).total_steps
    fits = steps >= DEMO_MIN_LITE_MEDSAM_STEPS
    console.print(
        f"backbone: a LiteMedSAM step takes {step_seconds:.1f} s here, so {minutes:.1f} minutes hold {steps} steps "
        f"(it needs {DEMO_MIN_LITE_MEDSAM_STEPS} to beat tiny from scratch): "
        + ("training LiteMedSAM" if fits else "training tiny from scratch instead (--backbone lite_medsam forces it)")
    )
    return fits


def _choose_backbone(requested: str, console) -> tuple[str, Path | None]:
    """(backbone, weights file): LiteMedSAM when its weights can be fetched, else tiny from scratch (on a CPU,
    ``demo`` then checks that LiteMedSAM's steps are fast enough for the budget)."""
    from masksam.backbones.weights import fetch_weights
    from masksam.errors import CheckpointError, ConfigError

    if requested not in ("auto", "lite_medsam", "tiny"):
        raise ConfigError(f"the demo runs on lite_medsam or tiny, not '{requested}'; use 'masksam train' for others")
    if requested == "tiny":
        console.print("backbone: tiny, trained from scratch (as asked; --backbone lite_medsam runs the real one)")
        return "tiny", None
    try:
        weights = fetch_weights("lite_medsam", log=lambda line: console.print(f"  {line}"))
    except CheckpointError as error:
        if requested == "lite_medsam":
            raise
        console.print(f"backbone: tiny, trained from scratch — LiteMedSAM's weights could not be fetched: {error}")
        return "tiny", None
    console.print(f"backbone: lite_medsam (pretrained LiteMedSAM, frozen) from {weights}")
    return "lite_medsam", weights


def _cached_lite_medsam(console) -> Path | None:
    """LiteMedSAM's weights for the zero-shot reference (fetched if possible), or None."""
    from masksam.backbones.weights import fetch_weights
    from masksam.errors import CheckpointError

    try:
        return fetch_weights("lite_medsam", log=lambda line: console.print(f"  {line}"))
    except CheckpointError as error:
        console.print(f"      (no LiteMedSAM zero-shot reference: its weights could not be fetched: {error})")
        return None


def _predict_from_boxes(dataset: Path, predictions: Path, weights: Path, plans, device) -> None:
    """LiteMedSAM from ground-truth boxes, slice by slice along the plans' slice axis, written as NIfTI."""
    from masksam.backbones.sam import build_backbone, load_backbone_weights
    from masksam.inference.box_prompted import box_prompted_folder

    backbone = load_backbone_weights(build_backbone("lite_medsam", image_size=_DEMO_BOX_PROMPT_SIZE), weights)
    classes = sorted(value for value in plans.labels.values() if value != 0)
    box_prompted_folder(
        backbone,
        dataset / "imagesTs",
        dataset / "labelsTs",
        predictions,
        classes,
        slice_axis=plans.transpose[0],
        device=device,
    )


def _predict(trainer, dataset: Path, predictions: Path) -> None:
    from masksam.data.io import list_cases, read_dataset_json
    from masksam.inference.predictor import Predictor
    from masksam.training.checkpoint import TrainedModel, checkpoint_path

    final = TrainedModel(trainer.model, trainer.plans, {}, checkpoint_path(trainer.fold_dir, "final"))
    predictor = Predictor([final], device=trainer.context.device, tta=False, amp=trainer.precision.amp)
    for case in list_cases(dataset, read_dataset_json(dataset), "Ts"):
        predictor.predict_case(case.images, predictions / f"{case.case_id}.nii.gz")


def _evaluate(dataset: Path, predictions: Path, console, *, title: str) -> Path:
    from rich.table import Table

    from masksam.evaluation.summary import evaluate_folders, write_summary

    summary = evaluate_folders(predictions, dataset / "labelsTs", labels=dataset / "dataset.json", num_workers=0)
    path = write_summary(summary, predictions / "summary.json")
    table = Table(title=f"{title} ({len(summary.cases)} cases)")
    for column in ("class", "Dice", "HD95 (mm)"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for item in summary.classes:
        table.add_row(item.name, f"{item.dice:.3f}", f"{item.hd95:.1f}")
    table.add_row("[bold]mean[/]", f"[bold]{summary.foreground_dice:.3f}[/]", f"{summary.foreground_hd95:.1f}")
    console.print(table)
    return path


def _draw(dataset: Path, predictions: Path, pictures: Path, plans) -> None:
    from masksam.data.io import read_volume
    from masksam.visualization.overlays import draw_overlays

    names = [name for name, _ in sorted(plans.labels.items(), key=lambda item: item[1])]
    for label_file in sorted((dataset / "labelsTs").glob("*.nii.gz"))[:2]:
        case_id = label_file.name.removesuffix(".nii.gz")
        image = read_volume(dataset / "imagesTs" / f"{case_id}_0000.nii.gz")
        draw_overlays(
            image.array,
            reference=read_volume(label_file, is_label=True).array,
            prediction=read_volume(predictions / label_file.name, is_label=True).array,
            axis=plans.transpose[0],
            spacing=image.geometry.spacing,
            class_names=names,
            path=pictures / f"{case_id}.png",
        )
