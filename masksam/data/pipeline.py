"""``masksam plan`` end to end (validate, fingerprint, plan, split, preprocess into the cache), and what ``train``
does before training: plan if needed, then reuse the cache if it fits the plans, else preprocess again."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from masksam.data.cache import write_json_atomic
from masksam.data.cache_folder import build_cache, cache_folder_name, stale_cases
from masksam.data.fingerprint import fingerprint_dataset
from masksam.data.io import list_cases, read_dataset_json
from masksam.data.plans import Plans, plan_experiment
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
            splits_final.json, preprocessed_<key>/; see ``cache_folder``).
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
    plans = replace(plans, preprocessed_folder=cache_folder_name(plans))
    plans_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(fingerprint.to_json(), plans_dir / "dataset_fingerprint.json")
    shutil.copyfile(dataset_dir / "dataset.json", plans_dir / "dataset.json")
    write_splits(_splits([c.case_id for c in cases], num_folds, seed), plans_dir / "splits_final.json")
    written = skipped = 0
    if preprocess:
        cache = build_cache(cases, plans, plans_dir, seed=seed, num_workers=num_workers, progress=progress)
        written, skipped = cache.written, cache.skipped
    plans.save(plans_dir / "plans.json")  # last: a plans.json names a complete cache (or none, --no-preprocess)
    return PlanResult(plans, plans_dir, written, skipped)


@dataclass(frozen=True)
class PreparedData:
    """What ``prepare_for_training`` found or did.

    Attributes:
        plans: The plans to train with.
        plans_dir: Their folder.
        action: ``"planned"`` (no plans yet), ``"reused"`` (the cache was complete and matched) or
            ``"rebuilt"`` (cases were missing, or preprocessed under other plans or from other raw files).
        preprocessed: Cases preprocessed now (``"reused"``: none).
        cases: Cases in the cache.
    """

    plans: Plans
    plans_dir: Path
    action: str
    preprocessed: int
    cases: int

    def describe(self) -> str:
        """One line for the training output: which cache the run reads, and whether it was made now."""
        folder = self.plans_dir / self.plans.preprocessed_folder
        if self.action == "reused":
            return f"preprocessed cache: {folder} ({self.cases} cases, made for these plans; reused)"
        if self.action == "rebuilt":
            return (
                f"preprocessed cache: {folder} ({self.preprocessed} of {self.cases} cases were missing or made under "
                "other plans or from other raw files; preprocessed again)"
            )
        return f"preprocessed cache: {folder} ({self.cases} cases, preprocessed now)"


def prepare_for_training(
    dataset_dir: Path, plans_dir: Path, *, num_workers: int = 2, progress: bool = True
) -> PreparedData:
    """Plans the dataset into ``plans_dir`` unless it is planned, then makes sure its cache fits the plans.

    A cache is reused only when every case was preprocessed under these plans from the raw files as they are now
    (``cache_folder.stale_cases``); otherwise the stale cases are preprocessed again into the plans' own cache
    folder, which ``plans.json`` then names.

    Raises:
        DatasetError: The dataset is invalid or a raw file unreadable.
    """
    dataset_dir, plans_dir = Path(dataset_dir), Path(plans_dir)
    if not (plans_dir / "plans.json").is_file():
        result = plan_and_preprocess(dataset_dir, plans_dir, num_workers=num_workers, progress=progress)
        return PreparedData(result.plans, plans_dir, "planned", result.written, result.written + result.skipped)
    plans = Plans.load(plans_dir)
    cases = list_cases(dataset_dir, read_dataset_json(dataset_dir), "Tr")
    named = plans_dir / plans.preprocessed_folder
    if not stale_cases(cases, plans, named):
        return PreparedData(plans, plans_dir, "reused", 0, len(cases))
    cache = build_cache(cases, plans, plans_dir, reuse_from=named, num_workers=num_workers, progress=progress)
    if cache.folder.name != plans.preprocessed_folder:
        plans = replace(plans, preprocessed_folder=cache.folder.name)
        plans.save(plans_dir / "plans.json")
    return PreparedData(plans, plans_dir, "rebuilt", cache.written, len(cases))
