"""``masksam plan`` end to end: validate, fingerprint, plan, split, preprocess into the cache."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from masksam.data.cache import write_json_atomic
from masksam.data.fingerprint import fingerprint_dataset
from masksam.data.io import list_cases
from masksam.data.parallel import map_cases
from masksam.data.plans import Plans, plan_experiment
from masksam.data.preprocessing import preprocess_training_case
from masksam.data.presets import DataPreset, detect_data_preset, get_data_preset
from masksam.data.splits import group_of, make_splits, write_splits
from masksam.data.validation import validate_dataset


@dataclass(frozen=True)
class PlanResult:
    """What ``plan_and_preprocess`` did.

    Attributes:
        plans: The plans written.
        plans_dir: Output folder.
        written: Cases preprocessed now.
        skipped: Cases already up to date in the cache.
    """

    plans: Plans
    plans_dir: Path
    written: int
    skipped: int


def resolve_preset(preset: str, dataset_name: str, folder_name: str) -> DataPreset | None:
    """``"auto"``: by dataset name keywords; ``"none"``: no preset; otherwise the named preset."""
    if preset == "none":
        return None
    if preset == "auto":
        return detect_data_preset(dataset_name) or detect_data_preset(folder_name)
    return get_data_preset(preset)


def _splits(case_ids: list[str], num_folds: int, seed: int) -> list[dict[str, list[str]]]:
    # Small datasets get as many folds as they have patients; a single patient trains on everything.
    patients = len({group_of(c) for c in case_ids})
    if patients < 2:
        return [{"train": sorted(case_ids), "val": []}]
    return make_splits(case_ids, num_folds=min(num_folds, patients), seed=seed)


def plan_and_preprocess(
    dataset_dir: Path,
    plans_dir: Path,
    *,
    preset: str = "auto",
    num_workers: int = 2,
    num_folds: int = 5,
    seed: int = 12345,
    batch_size: int = 2,
    include_background: bool = True,
    preprocess: bool = True,
    progress: bool = True,
) -> PlanResult:
    """Validates a raw dataset, plans it and fills the preprocessed cache.

    Nothing is written unless validation passes. Re-running skips cases already up to date.

    Args:
        dataset_dir: nnU-Net raw dataset folder.
        plans_dir: Output folder (plans.json, dataset.json, dataset_fingerprint.json,
            splits_final.json, preprocessed/).
        preset: ``"auto"``, ``"none"``, or a preset name (acdc, synapse, amos).
        num_workers: Worker processes for reading and preprocessing.
        num_folds: Cross-validation folds.
        seed: Seed of the splits and samples.
        batch_size: Training batch size recorded in the plans.
        include_background: Background is a target segment.
        preprocess: Also fill the cache.
        progress: Show progress bars.

    Returns:
        What was done.

    Raises:
        DatasetError: The dataset is invalid (``DatasetValidationError`` lists every problem).
    """
    dataset_dir, plans_dir = Path(dataset_dir), Path(plans_dir)
    description = validate_dataset(dataset_dir, num_workers=num_workers, progress=progress)
    cases = list_cases(dataset_dir, description, "Tr")
    raw = json.loads((dataset_dir / "dataset.json").read_text())
    fingerprint = fingerprint_dataset(cases, description, num_workers=num_workers, seed=seed, progress=progress)
    plans = plan_experiment(
        description,
        fingerprint,
        preset=resolve_preset(preset, description.name, dataset_dir.name),
        batch_size=batch_size,
        include_background=include_background,
        spacing_known=bool(raw.get("spacing_known", True)),
    )
    plans_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(fingerprint.to_json(), plans_dir / "dataset_fingerprint.json")
    shutil.copyfile(dataset_dir / "dataset.json", plans_dir / "dataset.json")
    plans.save(plans_dir / "plans.json")
    write_splits(_splits([c.case_id for c in cases], num_folds, seed), plans_dir / "splits_final.json")
    written = skipped = 0
    if preprocess:
        folder = plans_dir / plans.preprocessed_folder
        jobs = [(case, plans, folder, seed + index) for index, case in enumerate(cases)]
        results = map_cases(
            preprocess_training_case,
            jobs,
            num_workers=num_workers,
            description="preprocessing",
            progress=progress,
        )
        written, skipped = results.count("written"), results.count("skipped")
    return PlanResult(plans, plans_dir, written, skipped)
