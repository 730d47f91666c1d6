"""benchmarks/acdc_experiment.py: a stored row is reused only for the same fold, cases, TTA, seed and budget; each
fold has its own evaluation links and each fold and TTA setting its own predictions; the row's training time is the
one its checkpoint records."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("acdc_experiment", REPO / "benchmarks" / "acdc_experiment.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def write_splits(plans_dir: Path, folds: list[list[str]]) -> None:
    """splits_final.json whose fold F validates ``folds[F]`` and trains on the others."""
    plans_dir.mkdir(parents=True, exist_ok=True)
    every = sorted(case for fold in folds for case in fold)
    splits = [{"train": [c for c in every if c not in val], "val": sorted(val)} for val in folds]
    (plans_dir / "splits_final.json").write_text(json.dumps(splits))
    (plans_dir / "plans.json").write_text("{}")  # present: main() does not plan


def write_raw_dataset(dataset: Path, cases: list[str]) -> None:
    for case in cases:
        for path in (dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")


FOLDS = [["p1_f1", "p1_f2", "p2_f1"], ["p3_f1", "p3_f2", "p4_f1"]]


def linked(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_each_fold_links_exactly_its_own_validation_cases(experiment, tmp_path: Path) -> None:
    dataset, plans_dir = tmp_path / "raw", tmp_path / "plans"
    write_raw_dataset(dataset, [case for fold in FOLDS for case in fold])
    write_splits(plans_dir, FOLDS)
    images0, labels0 = experiment.validation_set(plans_dir, dataset, 0, tmp_path / "eval", 2)
    images1, labels1 = experiment.validation_set(plans_dir, dataset, 1, tmp_path / "eval", 2)
    assert images0 != images1 and labels0 != labels1
    assert linked(labels0) == ["p1_f1.nii.gz", "p1_f2.nii.gz"]
    assert linked(images1) == ["p3_f1_0000.nii.gz", "p3_f2_0000.nii.gz"]
    assert linked(labels1) == ["p3_f1.nii.gz", "p3_f2.nii.gz"]
    # Other splits (plans made again): the links of cases no longer in the set go.
    write_splits(plans_dir, [["p2_f1", "p3_f1", "p4_f1"], ["p1_f1", "p1_f2", "p3_f2"]])
    images0, labels0 = experiment.validation_set(plans_dir, dataset, 0, tmp_path / "eval", 2)
    assert linked(images0) == ["p2_f1_0000.nii.gz", "p3_f1_0000.nii.gz"]
    assert linked(labels0) == ["p2_f1.nii.gz", "p3_f1.nii.gz"]
    assert (labels0 / "p2_f1.nii.gz").resolve() == (dataset / "labelsTr" / "p2_f1.nii.gz").resolve()


KEY = {"fold": 0, "case_ids": ["a", "b"], "tta": False, "seed": 0, "minutes": 45.0}


@pytest.mark.parametrize(
    "change",
    [{"fold": 1}, {"case_ids": ["a", "c"]}, {"tta": True}, {"seed": 1}, {"minutes": 30.0}, {"refine": 0}],
    ids=["fold", "cases", "tta", "seed", "budget", "refinement"],
)
def test_a_stored_row_is_reused_only_when_its_whole_key_matches(experiment, change: dict) -> None:
    stored = {"row": "masksam_tiny", "mean_dice": 0.5} | experiment.row_key("masksam_tiny", **KEY)
    assert experiment.is_current(stored, experiment.row_key("masksam_tiny", **KEY))
    assert not experiment.is_current(stored, experiment.row_key("masksam_tiny", **(KEY | change)))


def test_the_untrained_box_row_depends_on_fold_and_cases_only(experiment) -> None:
    stored = experiment.row_key("litemedsam_gt_boxes", **KEY)
    for change in ({"tta": True}, {"seed": 3}, {"minutes": 5.0}, {"refine": 2}):
        assert experiment.is_current(stored, experiment.row_key("litemedsam_gt_boxes", **(KEY | change)))
    assert not experiment.is_current(stored, experiment.row_key("litemedsam_gt_boxes", **(KEY | {"fold": 2})))


def test_predictions_are_kept_apart_per_fold_tta_and_refinement(experiment, tmp_path: Path) -> None:
    folders = {
        experiment.predictions_folder(tmp_path, fold, tta, refine)
        for fold in (0, 1)
        for tta in (False, True)
        for refine in (None, 1, 2)
    }
    assert len(folders) == 12
    # No passes (None or 0) is the folder of the rows predicted before refinement existed.
    assert experiment.predictions_folder(tmp_path, 0, False, 0) == experiment.predictions_folder(tmp_path, 0, False)


def test_a_model_trained_with_another_seed_or_budget_is_refused(experiment, tmp_path: Path) -> None:
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()
    torch.save({"training_config": {"time_budget_minutes": 45.0, "seed": 0}}, fold_dir / "checkpoint_latest.pt")
    experiment.check_training(tmp_path, 0, 45.0, 0)
    with pytest.raises(SystemExit, match="seed 0, not 1"):
        experiment.check_training(tmp_path, 0, 45.0, 1)
    with pytest.raises(SystemExit, match=r"budget \(minutes\) 45.0, not 30"):
        experiment.check_training(tmp_path, 0, 30.0, 0)


@pytest.mark.parametrize("threads", [None, 2])
def test_train_threads_pin_the_threads_of_masksam_train_and_predict(
    experiment, tmp_path: Path, monkeypatch, threads: int | None
) -> None:
    """``--train-threads N`` reaches both commands of a MaskSAM row as ``--threads N``; without it neither gets one."""
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "p1_f1.nii.gz").write_bytes(b"")
    issued: list[list[str]] = []
    monkeypatch.setattr(experiment, "run", lambda command, log, commands: issued.append(command))
    monkeypatch.setattr(experiment, "score", lambda *args, **kwargs: None)
    monkeypatch.setattr(experiment, "training_record", lambda model_dir, fold: {})
    args = experiment._parser().parse_args(
        ["--output", str(tmp_path / "out"), "--device", "cpu"] + ([] if threads is None else ["--train-threads", "2"])
    )
    experiment.masksam_row("masksam_tiny", args, tmp_path / "plans", tmp_path / "images", labels, tmp_path / "log")
    assert [command[3] for command in issued] == ["train", "predict"]
    for command in issued:
        if threads is None:
            assert "--threads" not in command
        else:
            assert command[command.index("--threads") + 1] == "2"


def test_the_training_time_is_the_one_the_checkpoint_records(experiment, tmp_path: Path) -> None:
    """A resumed run's checkpoint records the training time of all its parts (metrics.csv lacks what an
    interrupted epoch and each part's start-up took)."""
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()
    with (fold_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "epoch_seconds"])
        writer.writeheader()
        writer.writerows([{"epoch": 1, "epoch_seconds": 60.0}, {"epoch": 2, "epoch_seconds": 60.0}])
    (fold_dir / "training_log.txt").write_text("time budget: ..., so this run does 2 epochs × 50 iterations\n")
    assert experiment.training_record(tmp_path, 0) == {"train_minutes": 2.0, "train_steps": 100}
    torch.save({"training_seconds": 300.0}, fold_dir / "checkpoint_final.pt")
    assert experiment.training_record(tmp_path, 0) == {"train_minutes": 5.0, "train_steps": 100}


def run_main(experiment, monkeypatch, output: Path, dataset: Path, *args: str) -> list[tuple]:
    """main() with the rows' work replaced by a record of what it was asked (row, fold, TTA, seed, cases)."""
    measured: list[tuple] = []

    def fake_row(row, args_, plans_dir, images, labels, *rest):
        cases = tuple(sorted(path.name for path in labels.iterdir()))
        measured.append((row, args_.fold, args_.tta, args_.seed, cases))
        return experiment.RowResult(row, experiment.ROWS[row], {}, {}, 0.5, 1.0)

    monkeypatch.setattr(experiment, "masksam_row", fake_row)
    monkeypatch.setattr(experiment, "unet_row", fake_row)
    argv = ["acdc_experiment.py", "--dataset", str(dataset), "--output", str(output), "--device", "cpu", *args]
    monkeypatch.setattr(sys, "argv", argv)
    experiment.main()
    return measured


def test_a_second_fold_tta_or_seed_into_the_same_output_measures_the_row_again(
    experiment, tmp_path: Path, monkeypatch
) -> None:
    dataset, output = tmp_path / "raw", tmp_path / "out"
    write_raw_dataset(dataset, [case for fold in FOLDS for case in fold])
    write_splits(output / "plans", FOLDS)
    rows = ["--rows", "masksam_tiny", "--eval-cases", "2"]
    first = run_main(experiment, monkeypatch, output, dataset, *rows)
    assert first == [("masksam_tiny", 0, False, 0, ("p1_f1.nii.gz", "p1_f2.nii.gz"))]
    assert run_main(experiment, monkeypatch, output, dataset, *rows) == []  # the same: reused
    other_fold = run_main(experiment, monkeypatch, output, dataset, *rows, "--fold", "1")
    assert other_fold == [("masksam_tiny", 1, False, 0, ("p3_f1.nii.gz", "p3_f2.nii.gz"))]
    assert run_main(experiment, monkeypatch, output, dataset, *rows, "--fold", "1", "--tta") != []
    assert run_main(experiment, monkeypatch, output, dataset, *rows, "--fold", "1", "--tta", "--seed", "2") != []
    assert run_main(experiment, monkeypatch, output, dataset, *rows, "--fold", "1", "--tta", "--seed", "2") == []
    stored = json.loads((output / "results.json").read_text())["rows"]["masksam_tiny"]
    assert (stored["fold"], stored["tta"], stored["seed"], stored["budget_minutes"]) == (1, True, 2, 45.0)
    assert stored["eval_case_ids"] == ["p3_f1", "p3_f2"]


def test_rows_stored_before_the_key_take_it_from_the_header(experiment, tmp_path: Path) -> None:
    """results.json as the experiment wrote it before rows recorded fold, TTA, seed and cases."""
    plans_dir = tmp_path / "plans"
    write_splits(plans_dir, FOLDS)
    stored = {
        "command": "benchmarks/acdc_experiment.py --rows masksam_lite_medsam --eval-cases 2 --fold 1",
        "budget_minutes": 45.0,
        "fold": 1,
        "eval_images": "imagesVal2",
        "rows": {"masksam_lite_medsam": {"row": "masksam_lite_medsam", "eval_cases": 2, "budget_minutes": 45.0}},
    }
    experiment.upgrade_stored_rows(stored, plans_dir)
    entry = stored["rows"]["masksam_lite_medsam"]
    key = {"fold": 1, "case_ids": ["p3_f1", "p3_f2"], "tta": False, "seed": 0, "minutes": 45.0, "refine": 0}
    assert experiment.is_current(entry, experiment.row_key("masksam_lite_medsam", **key))
    assert not experiment.is_current(entry, experiment.row_key("masksam_lite_medsam", **(key | {"tta": True})))
    # Predicted before refinement passes existed: not the row today's default (one pass) would give.
    assert not experiment.is_current(entry, experiment.row_key("masksam_lite_medsam", **(key | {"refine": None})))
