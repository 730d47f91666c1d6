"""``masksam plan``: validate an nnU-Net raw dataset, plan it and fill the preprocessed cache that ``train`` reads.

The dataset is a folder or an nnU-Net ID (``masksam plan 27``, ``-d 27``); plans and cache go to the folder every
``train`` of the dataset looks in first (``masksam.data.locations``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from masksam.cli.dataset_argument import DATASET_HELP, DATASET_ID_HELP, dataset_of
from masksam.errors import DatasetError

PLANS_DIR_HELP = (
    "Plans and preprocessed cache folder, shared by plan and train (default: $MASKSAM_PREPROCESSED/DATASET_FOLDER_NAME,"
    " or ./masksam_preprocessed/DATASET_FOLDER_NAME when the variable is unset)."
)


def plan(
    ctx: typer.Context,
    dataset_dir: Path = typer.Argument(None, help=DATASET_HELP, show_default=False),
    dataset_id: str = typer.Option(None, "-d", "--dataset", help=DATASET_ID_HELP),
    output: Path = typer.Option(None, "--output", "-o", help=PLANS_DIR_HELP),
    preset: str = typer.Option("auto", help="Patch/query preset: auto (by dataset name), none, acdc, synapse, amos."),
    num_workers: int = typer.Option(2, "--num-workers", "-j", help="Worker processes for reading and preprocessing."),
    folds: int = typer.Option(5, help="Cross-validation folds in splits_final.json."),
    seed: int = typer.Option(12345, help="Seed of the splits and of the foreground samples."),
    batch_size: int = typer.Option(2, help="Training batch size recorded in plans.json."),
    include_background: bool = typer.Option(
        True, "--include-background/--exclude-background", help="Make background a target segment (paper default)."
    ),
    preprocess: bool = typer.Option(
        True, "--preprocess/--no-preprocess", help="Fill the cache (--no-preprocess: validate and plan only)."
    ),
) -> None:
    """Check a dataset, write plans.json + splits_final.json, and cache preprocessed cases."""
    dataset_dir = dataset_of(ctx, dataset_dir, dataset_id)  # first: a usage error should not wait for imports
    from masksam.data.locations import default_plans_dir
    from masksam.data.pipeline import plan_and_preprocess
    from masksam.data.validation import DatasetValidationError

    output = output or default_plans_dir(dataset_dir)
    try:
        result = plan_and_preprocess(
            dataset_dir,
            output,
            preset=preset,
            num_workers=num_workers,
            num_folds=folds,
            seed=seed,
            batch_size=batch_size,
            include_background=include_background,
            preprocess=preprocess,
            progress=sys.stderr.isatty(),
        )
    except DatasetValidationError as error:
        print(f"masksam: {len(error.problems)} problem(s) in {error.dataset_dir}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise DatasetError(
            f"dataset {error.dataset_dir} is invalid ({len(error.problems)} problem(s) listed "
            "above); fix them and re-run, nothing was written"
        ) from None
    plans = result.plans
    spacing = tuple(round(s, 3) for s in plans.target_spacing)
    print(f"plans: {result.plans_dir / 'plans.json'}")
    print(
        f"  preset {plans.preset or 'none'}; patch (T,H,W) {plans.patch_size}; queries {plans.num_queries}; "
        f"classes {plans.num_classes}; target spacing (T,H,W) {spacing}"
    )
    print(
        f"  normalisation: {', '.join(n.scheme for n in plans.normalization)}; "
        f"transpose {plans.transpose}{'' if plans.spacing_known else '; spacing unknown (1 mm assumed)'}"
    )
    if preprocess:
        print(
            f"cache: {result.plans_dir / plans.preprocessed_folder} ({result.written} written, "
            f"{result.skipped} up to date)"
        )
