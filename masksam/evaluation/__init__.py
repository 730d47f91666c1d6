"""Evaluation: Dice and HD95 per class and case, and summaries of a prediction folder against references.

::

    from masksam.evaluation import evaluate_folders, write_summary

    summary = evaluate_folders(pred_dir, labels_dir, labels=dataset_dir, num_workers=2)
    write_summary(summary, pred_dir / "summary.json")
    summary.foreground_dice, [(c.name, c.dice, c.hd95) for c in summary.classes]

Definitions (HD95 pooling, empty masks) are in :mod:`masksam.evaluation.metrics`.
"""

from masksam.evaluation.metrics import ClassMetrics, binary_metrics, label_metrics, surface_distances, volume_diagonal
from masksam.evaluation.summary import (
    CaseResult,
    ClassSummary,
    EvaluationSummary,
    evaluate_case,
    evaluate_folders,
    match_cases,
    read_label_names,
    summarize,
    write_summary,
)

__all__ = [
    "CaseResult",
    "ClassMetrics",
    "ClassSummary",
    "EvaluationSummary",
    "binary_metrics",
    "evaluate_case",
    "evaluate_folders",
    "label_metrics",
    "match_cases",
    "read_label_names",
    "summarize",
    "surface_distances",
    "volume_diagonal",
    "write_summary",
]
