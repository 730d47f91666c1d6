"""A few cases of an nnU-Net raw dataset as a dataset of their own (same folder name, same dataset.json).

Used where planning the whole dataset would cost more than the measurement: ``bench_predict_acdc.py --cases N``
plans only the N cases it predicts (linked, not copied), and ``gpu_check.py bundle`` copies a few training and
test cases into the folder carried to a GPU machine.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

MISSING_DATASET_ADVICE = "pass --dataset DIR: an nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr)"


def check_dataset(dataset: Path | None, default: Path) -> Path:
    """The dataset folder to use: ``dataset`` if given, else ``default``; it must hold a dataset.json.

    Raises:
        SystemExit: One line naming the folder and the fix.
    """
    folder = Path(dataset) if dataset is not None else default
    if not (folder / "dataset.json").is_file():
        given = "" if dataset is not None else " (the default, beside this checkout)"
        raise SystemExit(f"{folder}{given}: no dataset.json there; {MISSING_DATASET_ADVICE}")
    return folder


def write_subset(
    dataset: Path,
    train_ids: Sequence[str],
    into: Path,
    *,
    test_ids: Sequence[str] = (),
    link: bool = False,
) -> Path:
    """Writes ``into/<dataset folder name>`` holding only the given cases; returns that folder.

    Training cases keep their ``imagesTr``/``labelsTr`` files; test cases move to ``imagesTs``/``labelsTs``
    (labels for scoring the predictions). ``numTraining`` is set to the number of training cases.

    Args:
        dataset: The nnU-Net raw dataset folder.
        train_ids: Case ids that stay training cases.
        into: Parent folder of the subset (created).
        test_ids: Case ids to hold out as test cases.
        link: Symbolic links instead of copies (fast; only for use on this machine).

    Raises:
        SystemExit: A case id without its image or label file (one line naming the file).
    """
    dataset = Path(dataset)
    raw = json.loads((dataset / "dataset.json").read_text())
    ending = raw["file_ending"]
    channels = sorted(int(channel) for channel in raw["channel_names"])
    target = Path(into) / dataset.name
    for ids, suffix in ((train_ids, "Tr"), (test_ids, "Ts")):
        for case_id in ids:
            sources = [dataset / "imagesTr" / f"{case_id}_{channel:04d}{ending}" for channel in channels]
            sources.append(dataset / "labelsTr" / f"{case_id}{ending}")
            for source in sources:
                if not source.is_file():
                    raise SystemExit(f"{source}: not found; choose case ids of {dataset}")
                destination = target / f"{source.parent.name[:-2]}{suffix}" / source.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                if link:
                    os.symlink(source.resolve(), destination)
                else:
                    shutil.copyfile(source, destination)
    subset = {**raw, "numTraining": len(train_ids)}
    (target / "dataset.json").write_text(json.dumps(subset, indent=4) + "\n")
    return target


def case_ids(dataset: Path) -> list[str]:
    """Training case ids of ``dataset`` in sorted order (from labelsTr)."""
    raw = json.loads((Path(dataset) / "dataset.json").read_text())
    ending = raw["file_ending"]
    return sorted(p.name[: -len(ending)] for p in (Path(dataset) / "labelsTr").iterdir() if p.name.endswith(ending))
