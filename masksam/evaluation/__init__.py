"""Evaluation: Dice and HD95 per class and case, summaries of a prediction folder against references."""

from masksam.evaluation.metrics import ClassMetrics, binary_metrics, label_metrics, surface_distances, volume_diagonal

__all__ = ["ClassMetrics", "binary_metrics", "label_metrics", "surface_distances", "volume_diagonal"]
