"""Inference (DESIGN §6): sliding window, mirroring TTA, MaskFormer semantic inference, NIfTI export.

What a user calls::

    from masksam.inference import Predictor, select_checkpoints

    paths, warnings = select_checkpoints(model_dir)                 # fold_0, fold_1, ...: checkpoint_final.pt
    predictor = Predictor.from_checkpoints(paths, device="auto")     # fold ensemble, TTA, step 0.5
    labels = predictor.predict_array(image, affine)                  # (C, X, Y, Z) -> (X, Y, Z) label map
    predictor.predict_case([CASE_0000.nii.gz], OUT / "CASE.nii.gz")  # same affine and header as the input
"""

from masksam.devices import resolve_device
from masksam.inference.cases import PredictionCase, find_prediction_cases
from masksam.inference.export import probabilities_path, write_label_map, write_probabilities
from masksam.inference.predictor import Prediction, Predictor, select_checkpoints
from masksam.inference.semantic import semantic_scores
from masksam.inference.sliding_window import (
    ScoreSlab,
    SlidingWindowConfig,
    gaussian_importance_map,
    sliding_window_scores,
    stream_scores,
    window_starts,
)
from masksam.inference.tta import mirror_axes, with_mirroring

__all__ = [
    "Prediction",
    "PredictionCase",
    "Predictor",
    "ScoreSlab",
    "SlidingWindowConfig",
    "find_prediction_cases",
    "gaussian_importance_map",
    "mirror_axes",
    "probabilities_path",
    "resolve_device",
    "select_checkpoints",
    "semantic_scores",
    "sliding_window_scores",
    "stream_scores",
    "window_starts",
    "with_mirroring",
    "write_label_map",
    "write_probabilities",
]
