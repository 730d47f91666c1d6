"""The dataset argument of ``plan`` and ``train``: a folder, or an nnU-Net ID given as DATASET_DIR or ``-d``."""

from __future__ import annotations

from pathlib import Path

import typer

DATASET_HELP = (
    "nnU-Net v2 raw dataset folder (dataset.json, imagesTr, labelsTr), or its ID (27, Dataset027: the folder "
    "$nnUNet_raw/Dataset027_*)."
)
DATASET_ID_HELP = "Dataset ID or folder instead of DATASET_DIR (nnU-Net's -d): 27 finds $nnUNet_raw/Dataset027_*."


def dataset_of(ctx: typer.Context, dataset_dir: Path | None, dataset_id: str | None) -> Path:
    """The raw dataset folder named by the positional DATASET_DIR or by ``-d`` (exactly one of them).

    ``ctx`` is the command's context (the usage error's line ends with the command's ``--help``).

    Raises:
        typer.BadParameter: Neither or both given (a usage error).
        DatasetError: What they name is no dataset folder (see ``locations.resolve_dataset``).
    """
    if (dataset_dir is None) == (dataset_id is None):
        given = "both DATASET_DIR and -d" if dataset_dir is not None else "neither DATASET_DIR nor -d"
        raise typer.BadParameter(
            f"{given} given; name the dataset once (a folder, or an ID such as 27)",
            ctx=ctx,
            param_hint="DATASET_DIR / -d",
        )
    from masksam.data.locations import resolve_dataset  # after the usage check: it imports torch (seconds)

    return resolve_dataset(dataset_dir if dataset_id is None else dataset_id)
