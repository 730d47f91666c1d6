"""Where datasets and their preprocessed caches live, with nnU-Net's conventions.

- A raw dataset is named by its folder, or (for nnU-Net users) by its ID: ``27``, ``027`` or ``Dataset027``
  finds the one folder ``$nnUNet_raw/Dataset027_*``; ``Dataset027_ACDC`` finds ``$nnUNet_raw/Dataset027_ACDC``
  when there is no such folder here.
- Plans and the preprocessed cache of a dataset live in one folder that ``plan`` and every ``train`` share:
  ``$MASKSAM_PREPROCESSED/DATASET_FOLDER_NAME``, or ``./masksam_preprocessed/DATASET_FOLDER_NAME`` when the
  variable is unset (nnU-Net's ``nnUNet_preprocessed`` holds nnU-Net's own files, so masksam has its own
  variable). ``plan -o`` and ``train --plans`` choose another folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from masksam.errors import DatasetError

RAW_VARIABLE = "nnUNet_raw"
PREPROCESSED_VARIABLE = "MASKSAM_PREPROCESSED"
DEFAULT_PREPROCESSED = Path("masksam_preprocessed")
# A dataset ID as nnU-Net spells it: 27, 027, Dataset027 (the number is written with 3 digits in folder names).
_DATASET_ID = re.compile(r"(?:Dataset)?(\d+)")
# A full nnU-Net dataset folder name: Dataset027_ACDC.
_DATASET_NAME = re.compile(r"Dataset\d{3,}_.+")


def preprocessed_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$MASKSAM_PREPROCESSED``, or ``./masksam_preprocessed`` when it is unset or empty."""
    value = environ.get(PREPROCESSED_VARIABLE, "")
    return Path(value).expanduser() if value else DEFAULT_PREPROCESSED


def default_plans_dir(dataset_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The plans and cache folder that ``plan`` and ``train`` share: ``PREPROCESSED_ROOT/DATASET_FOLDER_NAME``."""
    return preprocessed_root(environ) / Path(dataset_dir).resolve().name


def training_plans_dir(
    dataset_dir: Path, output: Path, given: Path | None, environ: Mapping[str, str] = os.environ
) -> Path:
    """The plans folder ``train`` uses: ``--plans`` if given; ``OUTPUT/plans`` for a model folder planned there
    by an older masksam (so ``--continue`` finds its own plans); else the shared folder of the dataset."""
    if given is not None:
        return Path(given)
    own = Path(output) / "plans"
    if (own / "plans.json").is_file():
        return own
    return default_plans_dir(dataset_dir, environ)


def resolve_dataset(text: str | Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The raw dataset folder that ``text`` names: an existing folder, or a dataset ID/name under ``$nnUNet_raw``.

    Args:
        text: A folder, an ID (``27``, ``027``, ``Dataset027``) or a folder name (``Dataset027_ACDC``).
        environ: Where ``nnUNet_raw`` is read.

    Raises:
        DatasetError: Neither a folder nor an ID; ``nnUNet_raw`` unset or missing; no folder, or several, match.
    """
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    name = str(text)
    by_id = _DATASET_ID.fullmatch(name)
    if by_id is None and _DATASET_NAME.fullmatch(name) is None:
        raise DatasetError(
            f"{name}: dataset folder not found; give the folder that holds dataset.json, or a dataset ID "
            f"(27, Dataset027) with {RAW_VARIABLE} set"
        )
    raw = environ.get(RAW_VARIABLE, "")
    if not raw:
        raise DatasetError(
            f"{name}: no such folder, and {RAW_VARIABLE} is not set to look the dataset up; export "
            f"{RAW_VARIABLE}=/path/to/nnUNet_raw or give the dataset folder"
        )
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: {RAW_VARIABLE} names no folder; set it to the folder of your DatasetXXX_* folders")
    if by_id is None:
        matches = [root / name] if (root / name).is_dir() else []
        wanted = name
    else:
        wanted = f"Dataset{int(by_id.group(1)):03d}_*"
        matches = sorted(folder for folder in root.glob(wanted) if folder.is_dir())
    if not matches:
        raise DatasetError(f"{root}: no {wanted} folder for dataset {name}; check the ID or {RAW_VARIABLE}")
    if len(matches) > 1:
        found = ", ".join(folder.name for folder in matches)
        raise DatasetError(f"{root}: several folders match dataset {name} ({found}); give the folder itself")
    return matches[0]
