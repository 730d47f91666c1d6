"""Cross-validation splits by case, grouped by patient, in nnU-Net's ``splits_final.json`` format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from masksam.data.cache import write_json_atomic

# Case ids that share what precedes a time-point suffix belong to one patient (ACDC: patient001_frame01/02).
DEFAULT_GROUP_PATTERN = r"^(?P<group>.+?)_(?:frame|time|tp|t|ed|es)\d*$"


def group_of(case_id: str, pattern: str = DEFAULT_GROUP_PATTERN) -> str:
    """The patient a case belongs to: the pattern's ``group`` match, else the case id itself."""
    match = re.match(pattern, case_id, flags=re.IGNORECASE)
    return match["group"] if match else case_id


def make_splits(
    case_ids: list[str], *, num_folds: int = 5, seed: int = 12345, group_pattern: str = DEFAULT_GROUP_PATTERN
) -> list[dict[str, list[str]]]:
    """K-fold splits where every case of a patient lands in the same fold.

    Patients are shuffled with ``seed`` and dealt to folds largest-first into the currently smallest fold,
    so fold sizes (in cases) differ by at most one patient.

    Args:
        case_ids: All training cases.
        num_folds: Number of folds (at most the number of patients).
        seed: Shuffle seed; the same seed and cases give the same splits.
        group_pattern: Regex with a ``group`` named group extracting the patient id.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]``, one dict per fold, case ids sorted.

    Raises:
        ValueError: Fewer patients than folds.
    """
    groups: dict[str, list[str]] = {}
    for case_id in sorted(case_ids):
        groups.setdefault(group_of(case_id, group_pattern), []).append(case_id)
    if len(groups) < num_folds:
        raise ValueError(f"{len(groups)} patients cannot fill {num_folds} folds; use fewer folds")
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    shuffled.sort(key=lambda name: -len(groups[name]))  # stable: shuffled order within equal sizes
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    for name in shuffled:
        smallest = min(range(num_folds), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(groups[name])
    all_cases = sorted(c for cases in groups.values() for c in cases)
    return [{"train": sorted(set(all_cases) - set(fold)), "val": sorted(fold)} for fold in folds]


def write_splits(splits: list[dict[str, list[str]]], path: Path) -> None:
    """Writes ``splits_final.json`` atomically."""
    write_json_atomic(splits, Path(path))
