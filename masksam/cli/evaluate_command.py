"""``masksam evaluate``: Dice and HD95 of a folder of predictions against reference label maps."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def evaluate(
    prediction_dir: Path = typer.Argument(
        ..., help="Folder of predicted label maps CASE.nii.gz (other files, e.g. summary.json or .npz, are ignored)."
    ),
    reference_dir: Path = typer.Argument(
        ..., help="Folder of reference label maps (e.g. labelsTs); each needs a prediction."
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="dataset.json (or a folder holding one) naming the classes (default: non-zero values of the references).",
    ),
    json_path: Path | None = typer.Option(
        None, "--json", help="Where to write summary.json (default: PREDICTION_DIR/summary.json)."
    ),
    workers: int = typer.Option(2, "--workers", "-j", min=0, help="Worker processes (0: evaluate in this process)."),
) -> None:
    """Per-case, per-class Dice and HD95 (mm), their means, a table and summary.json.

    HD95: 95th percentile of the surface distances of both directions pooled, in mm (reference voxel spacing).

    Empty masks: absent from both, Dice 1 and HD95 0; from exactly one, Dice 0 and HD95 = volume diagonal in mm.
    """
    from rich.console import Console
    from rich.table import Table

    from masksam.evaluation.summary import SUMMARY_FILE, evaluate_folders, write_summary

    summary = evaluate_folders(
        prediction_dir, reference_dir, labels=labels, num_workers=workers, progress=sys.stderr.isatty()
    )
    path = write_summary(summary, json_path or prediction_dir / SUMMARY_FILE)

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
