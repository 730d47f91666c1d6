"""Real-data experiment: MaskSAM and baselines on ACDC under one wall-clock training budget each.

Rows (each trained on fold ``--fold`` of our 5-fold split by patient, then predicted and scored with the same
evaluation as ``masksam evaluate`` on ``--eval-images``/``--eval-labels``, by default the fold's validation
cases):

- ``masksam_lite_medsam``: MaskSAM on the pretrained, frozen LiteMedSAM (our headline);
- ``masksam_tiny``: MaskSAM on the tiny backbone, SAM's weights trained from scratch (no pretraining);
- ``litemedsam_gt_boxes``: LiteMedSAM zero-shot, one ground-truth box per class and slice, the box's class as
  the label (the paper's "MedSAM bbox" rows; no training);
- ``masksam_gt_prompt``: MaskSAM on LiteMedSAM in ground-truth prompt mode (boxes from the labels in training
  and prediction; the paper's "MaskSAM bbox" row);
- ``unet``: a from-scratch 3-D U-Net (MONAI DynUNet, nnU-Net-style plan on the plans' 4-slice patch) on the same
  data pipeline and budget;
- ``unet_2d``: the same U-Net in nnU-Net's 2d configuration (what an nnU-Net user runs on ACDC): single-slice
  224×256 patches, six stages 32-512, deep supervision, SGD lr 0.01 with Nesterov momentum 0.99, poly decay;
  on a GPU nnU-Net's planned batch (56), on a CPU batch 2 (``UNET_2D_CPU_BATCH``);
- the paper's ACDC numbers (Tab. 3), printed for reference, not measured here.

Every step is a ``masksam`` command or library call whose command line is logged; a row already finished in
``--output`` is reused only when everything its result depends on matches (``row_key``: fold, evaluation cases, TTA,
refinement passes, seed and budget; ``--force`` deletes and redoes it), and an interrupted row continues where it
stopped (training from its latest checkpoint within what is left of its budget, prediction from the first missing
case); a model trained under another budget or seed is refused, not reused. Each fold keeps its own evaluation links
(``eval/fold_F/imagesValN``) and each fold, TTA and refinement setting its own predictions
(``ROW/predictions_foldF[_tta][_refineN]``), so two folds or settings in one ``--output`` never mix.
Prints a Markdown table and writes ``results.json``.

Usage::

    python benchmarks/acdc_experiment.py [--dataset ../shared/data/Dataset027_ACDC] [--output acdc_experiment]
        [--minutes 45] [--rows masksam_lite_medsam masksam_tiny ...] [--fold 0]
        [--eval-images DIR --eval-labels DIR | --eval-cases N] [--tta] [--refine N] [--device auto]
        [--num-workers 1] [--train-threads N] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset027_ACDC"
CLASSES = ("RV", "MYO", "LV")

# MaskSAM paper, Tab. 3 (ACDC, Dice in %), every row: not measured here; their split (70/10/20 patients) and
# budget differ. "GT" rows take box prompts from the ground truth.
PAPER_TABLE_3 = {
    "UNETR (paper)": (85.29, 86.52, 94.02, 88.61),
    "TransUNet (paper)": (88.86, 84.54, 95.73, 89.71),
    "SwinUNet (paper)": (88.55, 85.62, 95.83, 90.00),
    "nnUNet (paper)": (90.24, 89.24, 95.36, 91.61),
    "nnFormer (paper)": (90.94, 89.58, 95.65, 92.06),
    "SAM bbox, GT prompts (paper)": (70.95, 33.33, 81.31, 62.53),
    "MedSAM bbox, GT prompts (paper)": (85.86, 80.31, 92.33, 86.17),
    "MaskSAM bbox, GT prompts (paper)": (94.27, 91.69, 96.92, 94.30),
    "SAM3D (paper)": (89.44, 87.12, 94.67, 90.41),
    "MaskSAM (paper)": (92.30, 91.37, 96.49, 93.39),
}


@dataclass
class RowResult:
    """One measured row: per-class Dice and HD95, and what the training got out of its budget."""

    row: str
    description: str
    dice: dict[str, float]
    hd95: dict[str, float]
    mean_dice: float
    mean_hd95: float
    train_minutes: float | None = None
    train_steps: int | None = None
    predict_minutes: float | None = None
    commands: list[str] = field(default_factory=list)


ROWS = {
    "masksam_lite_medsam": "MaskSAM, LiteMedSAM backbone (pretrained, frozen)",
    "masksam_tiny": "MaskSAM, tiny backbone trained from scratch",
    "litemedsam_gt_boxes": "LiteMedSAM zero-shot, GT box per class and slice",
    "masksam_gt_prompt": "MaskSAM, LiteMedSAM, GT-box prompt mode",
    "unet": "U-Net from scratch (MONAI DynUNet)",
    "unet_2d": "U-Net 2D (nnU-Net 2d configuration)",
}

# Batch of the 2-D U-Net on a CPU. nnU-Net sizes its 2-D batch to fill 8 GB of GPU memory (56 slices of 224×256
# for ACDC); on this 2-core CPU a slice costs about 2.5 s of forward and backward (5.1 s per batch-2 step), so
# batch 56 would make 45 minutes about 19 steps (batch 12: under 100). Batch 2 is nnU-Net's own floor (its planner
# falls to 2 when memory binds) and the batch of every other trained row; here it gives about 500 steps. On a GPU
# the planned batch is used.
UNET_2D_CPU_BATCH = 2


def run(command: list[str], log: Path, commands: list[str]) -> None:
    """Runs a command with its output appended to ``log``; raises on failure with the log's tail."""
    printable = shlex.join(command)
    commands.append(printable)
    print(f"$ {printable}", flush=True)
    with log.open("a") as handle:
        handle.write(f"$ {printable}\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"failed ({result.returncode}): {printable}\n" + "\n".join(tail))


def masksam(*args: str) -> list[str]:
    return [sys.executable, "-m", "masksam", *args]


def validation_case_ids(plans_dir: Path, fold: int, limit: int | None) -> list[str]:
    """The fold's first ``limit`` validation cases in sorted order (all with None)."""
    splits = json.loads((plans_dir / "splits_final.json").read_text())
    return sorted(splits[fold]["val"])[:limit]


def validation_set(plans_dir: Path, dataset: Path, fold: int, target: Path, limit: int | None) -> tuple[Path, Path]:
    """Folders of symbolic links to the fold's validation images and labels (nnU-Net layout).

    With ``limit``, only the first ``limit`` validation cases in sorted order (both frames of the first
    patients): LiteMedSAM predicts about a volume a minute on two CPU cores.

    The folders are ``target/fold_F/imagesValN`` and ``labelsValN``; a link to a case outside the set (left by
    other splits) is removed, so a folder always holds exactly the fold's first N validation cases.
    """
    case_ids = validation_case_ids(plans_dir, fold, limit)
    folder = target / f"fold_{fold}"
    images, labels = folder / f"imagesVal{len(case_ids)}", folder / f"labelsVal{len(case_ids)}"
    for linked, names in (
        (images, {f"{case_id}_0000.nii.gz" for case_id in case_ids}),
        (labels, {f"{case_id}.nii.gz" for case_id in case_ids}),
    ):
        linked.mkdir(parents=True, exist_ok=True)
        for stale in [path for path in linked.iterdir() if path.name not in names]:
            stale.unlink()
    for case_id in case_ids:
        for source, link in (
            (dataset / "imagesTr" / f"{case_id}_0000.nii.gz", images / f"{case_id}_0000.nii.gz"),
            (dataset / "labelsTr" / f"{case_id}.nii.gz", labels / f"{case_id}.nii.gz"),
        ):
            if link.is_symlink() and link.readlink() == source.resolve():
                continue
            link.unlink(missing_ok=True)  # a link into another dataset folder
            link.symlink_to(source.resolve())
    return images, labels


def score(predictions: Path, labels: Path, dataset: Path, row: str, **extra) -> RowResult:
    """Evaluates a prediction folder (as ``masksam evaluate``) and keeps the per-class means."""
    from masksam.evaluation.summary import evaluate_folders, write_summary

    summary = evaluate_folders(predictions, labels, labels=dataset / "dataset.json", num_workers=1)
    write_summary(summary, predictions / "summary.json")
    return RowResult(
        row=row,
        description=ROWS[row],
        dice={item.name: item.dice for item in summary.classes},
        hd95={item.name: item.hd95 for item in summary.classes},
        mean_dice=summary.foreground_dice,
        mean_hd95=summary.foreground_hd95,
        **extra,
    )


def training_record(model_dir: Path, fold: int) -> dict[str, float | int | None]:
    """What the run's training took, from its own files (so a resumed or re-scored row reports the same).

    ``train_minutes``: the training time the final checkpoint records (``training_seconds``: what the budget
    governs, summed over every resumed part of the run), or for a model trained before checkpoints recorded it, the
    epochs' wall time summed from metrics.csv (training and validation); ``train_steps``: epochs × the iterations
    per epoch of the schedule in training_log.txt.
    """
    import csv
    import re

    import torch

    fold_dir = model_dir / f"fold_{fold}"
    metrics, log = fold_dir / "metrics.csv", fold_dir / "training_log.txt"
    if not (metrics.is_file() and log.is_file()):
        return {"train_minutes": None, "train_steps": None}
    with metrics.open() as handle:
        epochs = list(csv.DictReader(handle))
    schedules = re.findall(r"(\d+) epochs × (\d+) iterations", log.read_text())
    seconds = sum(float(epoch["epoch_seconds"]) for epoch in epochs)
    final = fold_dir / "checkpoint_final.pt"
    if final.is_file():
        seconds = torch.load(final, map_location="cpu", weights_only=False).get("training_seconds", seconds)
    return {
        "train_minutes": seconds / 60,
        "train_steps": len(epochs) * int(schedules[-1][1]) if schedules else None,
    }


def row_budget(row: str, minutes: float) -> float | None:
    """The training budget a row's result depends on (None for the untrained ground-truth-box row)."""
    return None if row == "litemedsam_gt_boxes" else minutes


# Rows predicted from generated prompts, by models trained with denoising queries (masksam train's default):
# ``masksam predict`` gives them DEFAULT_REFINEMENT refinement passes unless ``--refine`` says otherwise.
REFINED_ROWS = ("masksam_lite_medsam", "masksam_tiny")
DEFAULT_REFINEMENT = 1


def row_refinement(row: str, refine: int | None) -> int | None:
    """The refinement passes a row is predicted with (None: the row has none to choose)."""
    if row not in REFINED_ROWS:
        return None
    return DEFAULT_REFINEMENT if refine is None else refine


def row_key(
    row: str, *, fold: int, case_ids: list[str], tta: bool, seed: int, minutes: float, refine: int | None = None
) -> dict:
    """Everything a row's result depends on; a stored row is reused only when all of it matches.

    The ground-truth-box row is neither trained (no seed, no budget) nor mirrored (no TTA).
    """
    untrained = row == "litemedsam_gt_boxes"
    return {
        "fold": fold,
        "eval_case_ids": sorted(case_ids),
        "tta": None if untrained else tta,
        "seed": None if untrained else seed,
        "budget_minutes": row_budget(row, minutes),
        "refine": row_refinement(row, refine),
    }


def is_current(entry: dict, key: dict) -> bool:
    """Whether a stored row was measured under ``key`` (a row lacking a field of the key never is)."""
    return all(field_ in entry and entry[field_] == value for field_, value in key.items())


def upgrade_stored_rows(stored: dict, plans_dir: Path) -> None:
    """Fills the key fields of rows written before rows recorded them, from the file's header (the last command):
    fold, TTA and seed from its command line; the cases from the fold's splits when the evaluation set was the
    default one (``imagesValN``), otherwise left out, so such a row is measured again."""
    header_args = _parser().parse_known_args(shlex.split(stored.get("command", ""))[1:])[0]
    default_set = str(stored.get("eval_images", "")).startswith("imagesVal")
    for entry in stored["rows"].values():
        untrained = entry["row"] == "litemedsam_gt_boxes"
        entry.setdefault("budget_minutes", row_budget(entry["row"], stored["budget_minutes"]))
        entry.setdefault("fold", stored.get("fold", header_args.fold))
        entry.setdefault("tta", None if untrained else header_args.tta)
        entry.setdefault("seed", None if untrained else header_args.seed)
        entry.setdefault("refine", 0 if entry["row"] in REFINED_ROWS else None)  # rows before refinement existed
        if "eval_case_ids" not in entry and default_set and (plans_dir / "splits_final.json").is_file():
            entry["eval_case_ids"] = validation_case_ids(plans_dir, entry["fold"], entry["eval_cases"])


def check_training(model_dir: Path, fold: int, minutes: float, seed: int) -> None:
    """Refuses to reuse a model trained (or half-trained) under another budget than ``minutes`` or another seed."""
    import torch

    fold_dir = model_dir / f"fold_{fold}"
    for path in (fold_dir / "checkpoint_final.pt", fold_dir / "checkpoint_latest.pt"):
        if path.is_file():
            payload = torch.load(path, map_location="cpu", weights_only=False)
            config = payload.get("training_config", {})
            for name, trained, wanted in (
                ("budget (minutes)", config.get("time_budget_minutes"), minutes),
                ("seed", config.get("seed"), seed),
            ):
                if trained != wanted:
                    raise SystemExit(
                        f"{path}: trained with {name} {trained}, not {wanted:g}; "
                        "pass --force to retrain this row, or another --output"
                    )
            return


def predictions_folder(model_dir: Path, fold: int, tta: bool, refine: int | None = None) -> Path:
    """Where a row's model of ``fold`` writes its label maps: one folder per fold, TTA and refinement setting,
    so predictions of another fold's model, or made without TTA or with other refinement passes, are never taken
    for these."""
    refined = f"_refine{refine}" if refine else ""
    return model_dir / f"predictions_fold{fold}{'_tta' if tta else ''}{refined}"


def missing_predictions(predictions: Path, labels: Path) -> bool:
    """Some evaluation case has no prediction yet (predictions made for a larger evaluation set are kept)."""
    return any(not (predictions / label.name).is_file() for label in labels.glob("*.nii.gz"))


def masksam_row(row: str, args, plans_dir: Path, images: Path, labels: Path, log: Path) -> RowResult:
    """Train with ``masksam train`` under the budget, predict with ``masksam predict``, score."""
    model_dir = args.output / row
    backbone = "tiny" if row == "masksam_tiny" else "lite_medsam"
    ground_truth = row == "masksam_gt_prompt"
    commands: list[str] = []
    # Pinned threads: the probe of a fresh process can pick 1 thread while the other core is briefly busy.
    threads = [] if args.train_threads is None else ["--threads", str(args.train_threads)]
    check_training(model_dir, args.fold, args.minutes, args.seed)
    if not (model_dir / f"fold_{args.fold}" / "checkpoint_final.pt").is_file():
        train = ["train", str(args.dataset), "-o", str(model_dir), "--plans", str(plans_dir)]
        train += ["--fold", str(args.fold), "--backbone", backbone, "--time-budget", f"{args.minutes:g}"]
        train += ["--num-workers", str(args.num_workers), "--no-final-validation", "--seed", str(args.seed)]
        train += ["--device", args.device, *threads]
        if ground_truth:
            train += ["--prompt-mode", "ground_truth"]
        resume = (model_dir / f"fold_{args.fold}" / "checkpoint_latest.pt").is_file()
        run(masksam(*train, *(["--continue"] if resume else [])), log, commands)
    trained = time.monotonic()
    refine = row_refinement(row, args.refine)
    predictions = predictions_folder(model_dir, args.fold, args.tta, refine)
    predict = ["predict", "-i", str(images), "-o", str(predictions), "-m", str(model_dir), "--folds", str(args.fold)]
    predict += ["--continue", "--device", args.device, *threads] + ([] if args.tta else ["--no-tta"])
    predict += [] if refine is None else ["--refine", str(refine)]
    if ground_truth:
        predict += ["--prompt-labels", str(labels)]
    if missing_predictions(predictions, labels):
        run(masksam(*predict), log, commands)
    return score(
        predictions,
        labels,
        args.dataset,
        row,
        **training_record(model_dir, args.fold),
        predict_minutes=(time.monotonic() - trained) / 60,
        commands=commands,
    )


def boxes_row(args, plans_dir: Path, images: Path, labels: Path) -> RowResult:
    """LiteMedSAM zero-shot from ground-truth boxes, slice by slice along the plans' slice axis."""
    import torch

    from masksam.backbones.sam import build_backbone, load_backbone_weights
    from masksam.backbones.weights import fetch_weights
    from masksam.data.plans import Plans
    from masksam.devices import resolve_device
    from masksam.inference.box_prompted import box_prompted_folder

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    plans = Plans.load(plans_dir)
    backbone = load_backbone_weights(build_backbone("lite_medsam"), fetch_weights("lite_medsam"))
    classes = sorted(value for value in plans.labels.values() if value != 0)
    predictions = args.output / "litemedsam_gt_boxes" / "predictions"
    box_prompted_folder(
        backbone,
        images,
        labels,
        predictions,
        classes,
        slice_axis=plans.transpose[0],
        device=resolve_device(args.device),
    )
    return score(
        predictions,
        labels,
        args.dataset,
        "litemedsam_gt_boxes",
        predict_minutes=(time.monotonic() - started) / 60,
        commands=["masksam.inference.box_prompted.box_prompted_folder (LiteMedSAM at 256², percentile window)"],
    )


def unet_row(row: str, args, plans_dir: Path, images: Path, labels: Path) -> RowResult:
    """U-Net from scratch with the same loader, augmentation and budget (masksam.baselines.unet).

    ``unet``: the 3-D configuration with MaskSAM's optimiser (AdamW); ``unet_2d``: nnU-Net's 2d configuration
    with nnU-Net's optimiser (SGD, lr 0.01, Nesterov momentum 0.99) and, on a CPU, ``UNET_2D_CPU_BATCH``.
    """
    from masksam.baselines import predict_unet, train_unet
    from masksam.devices import resolve_device

    model_dir = args.output / row
    check_training(model_dir, args.fold, args.minutes, args.seed)
    settings: dict = {}
    if row == "unet_2d":
        on_cpu = resolve_device(args.device).type == "cpu"
        settings = {"configuration": "2d", "optimizer": "sgd", "batch_size": UNET_2D_CPU_BATCH if on_cpu else None}
    model_file = model_dir / f"fold_{args.fold}" / "checkpoint_final.pt"
    if not model_file.is_file():
        resume = (model_dir / f"fold_{args.fold}" / "checkpoint_latest.pt").is_file()
        model_file = train_unet(
            plans_dir,
            model_dir,
            fold=args.fold,
            minutes=args.minutes,
            seed=args.seed,
            num_workers=args.num_workers,
            device=args.device,
            resume=resume,
            **settings,
        )
    trained = time.monotonic()
    predictions = predictions_folder(model_dir, args.fold, args.tta)
    if missing_predictions(predictions, labels):
        predict_unet(model_file, images, predictions, tta=args.tta, device=args.device, skip_existing=True)
    call = ", ".join([f"minutes={args.minutes:g}"] + [f"{key}={value!r}" for key, value in settings.items()])
    return score(
        predictions,
        labels,
        args.dataset,
        row,
        **training_record(model_dir, args.fold),
        predict_minutes=(time.monotonic() - trained) / 60,
        commands=[f"masksam.baselines.unet.train_unet({call}) + predict_unet(tta={args.tta})"],
    )


def table(results: list[RowResult]) -> str:
    """Markdown table: measured rows, then the paper's."""
    lines = [
        "| row | RV | MYO | LV | mean Dice | mean HD95 (vox) | train min | steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        dice = " | ".join(f"{100 * result.dice.get(name, float('nan')):.1f}" for name in CLASSES)
        steps = "" if result.train_steps is None else str(result.train_steps)
        minutes = "" if result.train_minutes is None else f"{result.train_minutes:.1f}"
        lines.append(
            f"| {result.description} | {dice} | {100 * result.mean_dice:.1f} | {result.mean_hd95:.1f} "
            f"| {minutes} | {steps} |"
        )
    for name, (rv, myo, lv, mean) in PAPER_TABLE_3.items():
        lines.append(f"| {name}, not measured here | {rv:.2f} | {myo:.2f} | {lv:.2f} | {mean:.2f} | | | |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--output", type=Path, default=Path("acdc_experiment"))
    parser.add_argument("--minutes", type=float, default=45.0, help="training budget of each trained row")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--eval-images", type=Path, help="nnU-Net-layout images (default: the fold's validation)")
    parser.add_argument("--eval-labels", type=Path, help="their labels")
    parser.add_argument("--eval-cases", type=int, help="only the first N validation cases (default: all)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (4x slower)")
    parser.add_argument(
        "--refine",
        type=int,
        help=f"refinement passes of the automatic MaskSAM rows (default: masksam predict's, {DEFAULT_REFINEMENT})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process rows")
    parser.add_argument(
        "--train-threads",
        type=int,
        help="CPU threads of the MaskSAM rows' masksam train and predict (default: their probe decides)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when one is visible)")
    parser.add_argument("--num-workers", type=int, default=1, help="data-loading processes of the trained rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="redo rows whose results exist")
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if (args.eval_images is None) != (args.eval_labels is None):
        parser.error("--eval-images and --eval-labels go together")
    args.output = args.output.resolve()
    args.dataset = args.dataset.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    log = args.output / "experiment.log"
    plans_dir = args.output / "plans"
    if not (plans_dir / "plans.json").is_file():
        run(masksam("plan", str(args.dataset), "-o", str(plans_dir), "-j", "1"), log, [])
    if args.eval_images is None:
        images, labels = validation_set(plans_dir, args.dataset, args.fold, args.output / "eval", args.eval_cases)
    else:
        images, labels = args.eval_images.resolve(), args.eval_labels.resolve()

    results_file = args.output / "results.json"
    stored = json.loads(results_file.read_text()) if results_file.is_file() else {"rows": {}}
    done = stored["rows"]
    upgrade_stored_rows(stored, plans_dir)
    case_ids = sorted(path.name.removesuffix(".nii.gz") for path in labels.glob("*.nii.gz"))
    keys = {
        row: row_key(
            row,
            fold=args.fold,
            case_ids=case_ids,
            tta=args.tta,
            seed=args.seed,
            minutes=args.minutes,
            refine=args.refine,
        )
        for row in ROWS
    }
    for row in args.rows:
        if row in done and is_current(done[row], keys[row]) and not args.force:
            print(f"{row}: reusing {results_file}", flush=True)
            continue
        if args.force and (args.output / row).exists():
            print(f"--force: removing {args.output / row}", flush=True)
            shutil.rmtree(args.output / row)
        print(f"== {row}: {ROWS[row]}", flush=True)
        if row == "litemedsam_gt_boxes":
            result = boxes_row(args, plans_dir, images, labels)
        elif row in ("unet", "unet_2d"):
            result = unet_row(row, args, plans_dir, images, labels)
        else:
            result = masksam_row(row, args, plans_dir, images, labels, log)
        done[row] = asdict(result) | {"eval_cases": len(case_ids)} | keys[row]
        results_file.write_text(json.dumps(_header(args, images, labels) | {"rows": done}, indent=2))
    current = [row for row in ROWS if row in done and is_current(done[row], keys[row])]
    stored_only = {"eval_cases", "fold", "eval_case_ids", "tta", "seed", "budget_minutes", "refine"}  # not RowResult's
    results = [RowResult(**{k: v for k, v in done[row].items() if k not in stored_only}) for row in current]
    print(f"\nACDC, fold {args.fold}, {len(case_ids)} evaluation cases, budget {args.minutes:g} min")
    print(table(results))


def _header(args, images: Path, labels: Path) -> dict:
    import torch

    from masksam.devices import resolve_device

    device = resolve_device(args.device)
    return {
        "command": shlex.join([sys.argv[0], *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "budget_minutes": args.minutes,
        "fold": args.fold,
        "eval_images": images.name,
        "tta": args.tta,
        "seed": args.seed,
        "eval_cases": len(list(labels.glob("*.nii.gz"))),
    }


if __name__ == "__main__":
    main()
