"""Data pipeline: nnU-Net raw dataset -> validation -> plans -> preprocessed cache -> training batches and targets.

What a trainer calls::

    from masksam.data import Plans, build_targets, make_train_loader

    plans = Plans.load(plans_dir)                          # written by `masksam plan`
    loader = make_train_loader(plans_dir, fold=0, num_workers=2, seed=0)
    image, label = next(iter(loader))                      # (B, C, T, H, W) float32, (B, T, H, W) long
    targets = build_targets(label, num_classes=plans.num_classes, num_queries=plans.num_queries)

Inference maps predictions back with :func:`restore_original_geometry`.
"""

from masksam.data.augmentation import AugmentationConfig
from masksam.data.cache import CachedCase, CaseCache
from masksam.data.io import DatasetDescription, Geometry, list_cases, read_dataset_json, read_volume, write_volume
from masksam.data.loader import PatchStream, make_train_loader, read_split
from masksam.data.pipeline import PlanResult, plan_and_preprocess
from masksam.data.plans import NormalizationPlan, Plans
from masksam.data.preprocessing import preprocess_arrays, preprocessed_affine, restore_original_geometry
from masksam.data.presets import DATA_PRESETS, DataPreset, get_data_preset
from masksam.data.splits import make_splits
from masksam.data.targets import SliceTargets, build_targets, masks_to_boxes
from masksam.data.validation import DatasetProblem, DatasetValidationError, validate_dataset

__all__ = [
    "DATA_PRESETS",
    "AugmentationConfig",
    "CachedCase",
    "CaseCache",
    "DataPreset",
    "DatasetDescription",
    "DatasetProblem",
    "DatasetValidationError",
    "Geometry",
    "NormalizationPlan",
    "PatchStream",
    "PlanResult",
    "Plans",
    "SliceTargets",
    "build_targets",
    "get_data_preset",
    "list_cases",
    "make_splits",
    "make_train_loader",
    "masks_to_boxes",
    "plan_and_preprocess",
    "preprocess_arrays",
    "preprocessed_affine",
    "read_dataset_json",
    "read_split",
    "read_volume",
    "restore_original_geometry",
    "validate_dataset",
    "write_volume",
]
