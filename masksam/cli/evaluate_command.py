"""``masksam evaluate``: Dice and HD95 of a folder of predictions against reference label maps.

The folders come predictions first, references second; nnU-Net's ``nnUNetv2_evaluate_folder`` takes them the
other way round. Typed in nnU-Net's order the metrics are the same (both are symmetric), but summary.json would
land among the references: it is never written into the reference folder (nor into a "prediction" folder named
``labels*``), and references that hold no foreground at all get a warning that the folders look swapped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from masksam.errors import ConfigError


def parse_cases(cases: list[str] | None) -> list[str] | None:
    """``--cases a,b --cases c`` -> ["a", "b", "c"]; None when not given.

    Raises:
        ConfigError: Given, but naming no case.
    """
    if not cases:
        return None
    names = [name.strip() for item in cases for name in item.split(",") if name.strip()]
    if not names:
        raise ConfigError("--cases names no case; pass case ids like --cases patient001,patient002")
    return names


def evaluate(
    prediction_dir: Path = typer.Argument(
        ...,
        help="Folder of predicted label maps CASE.nii.gz (other files, e.g. summary.json or .npz, are ignored). "
        "First, unlike nnUNetv2_evaluate_folder, which takes the reference folder first.",
    ),
    reference_dir: Path = typer.Argument(
        ...,
        help="Folder of reference label maps (e.g. labelsTs); each needs a prediction (see --only-predicted). "
        "Never written into.",
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="dataset.json (or a folder holding one) naming the classes (default: non-zero values of the references).",
    ),
    json_path: Path | None = typer.Option(
        None,
        "--json",
        help="Where to write summary.json (default: PREDICTION_DIR/summary.json; never in REFERENCE_DIR).",
    ),
    cases: list[str] | None = typer.Option(
        None, "--cases", help="Score only these reference cases: comma-separated ids, e.g. --cases case_001,case_002."
    ),
    only_predicted: bool = typer.Option(
        False,
        "--only-predicted",
        help="Score only the reference cases that have a prediction (nnU-Net's --chill); default: refuse missing ones.",
    ),
    workers: int = typer.Option(2, "--workers", "-j", min=0, help="Worker processes (0: evaluate in this process)."),
) -> None:
    """Per-case, per-class Dice and HD95 (mm), their means, a table and summary.json.

    Folder order: PREDICTION_DIR REFERENCE_DIR (nnUNetv2_evaluate_folder: reference first).

    HD95: 95th percentile of the surface distances of both directions pooled, in mm (reference voxel spacing).

    Empty masks: absent from both, Dice 1 and HD95 0; from exactly one, Dice 0 and HD95 = volume diagonal in mm.
    """
    from rich.console import Console
    from rich.table import Table

    from masksam.evaluation.summary import (
        SUMMARY_FILE,
        SWAPPED_HINT,
        check_summary_destination,
        evaluate_folders,
        write_summary,
    )

    destination = json_path or prediction_dir / SUMMARY_FILE
    check_summary_destination(destination, prediction_dir, reference_dir)
    summary = evaluate_folders(
        prediction_dir,
        reference_dir,
        labels=labels,
        case_ids=parse_cases(cases),
        only_predicted=only_predicted,
        num_workers=workers,
        progress=sys.stderr.isatty(),
    )
    if summary.unpredicted_cases:
        shown = ", ".join(summary.unpredicted_cases[:5]) + (" ..." if len(summary.unpredicted_cases) > 5 else "")
        print(
            f"--only-predicted: {len(summary.unpredicted_cases)} reference case(s) without a prediction left out "
            f"({shown})",
            file=sys.stderr,
        )
    if len(summary.references_without_foreground()) == len(summary.cases):
        print(
            f"masksam: warning: no reference in {reference_dir} holds a foreground label; are the folders swapped? "
            f"{SWAPPED_HINT}",
            file=sys.stderr,
        )
    path = write_summary(summary, destination)

    table = Table(title=f"{len(summary.cases)} case(s): {prediction_dir} vs {reference_dir}")
    table.add_column("class")
    table.add_column("Dice", justify="right")
    table.add_column("HD95 mm", justify="right")
    table.add_column("cases", justify="right")
    table.add_column("in reference", justify="right")
    for item in summary.classes:
        table.add_row(
            str(item.class_id) if item.name == str(item.class_id) else f"{item.class_id} {item.name}",
            f"{item.dice:.4f}",
            f"{item.hd95:.2f}",
            str(item.num_cases),
            str(item.num_present),
        )
    table.add_section()
    table.add_row(
        "mean", f"{summary.foreground_dice:.4f}", f"{summary.foreground_hd95:.2f}", str(len(summary.cases)), ""
    )
    Console().print(table)
    print(f"summary: {path}")  # plain print: rich would wrap a long path
