"""Connected-component postprocessing: the components kept, nnU-Net's choice on validation cases, the rule file
and the installed `masksam postprocess` command."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from masksam.errors import MaskSamError
from masksam.evaluation.postprocessing import (
    PostprocessingRule,
    determine_postprocessing,
    keep_largest_component,
)


def test_largest_component_is_26_connected() -> None:
    mask = np.zeros((6, 6, 3), bool)
    mask[0:2, 0:2, 0] = True  # 4 voxels
    mask[2, 2, 1] = True  # touches the block only at a corner: the same component (5 voxels)
    mask[4:6, 4:6, 2] = True  # 4 voxels apart
    kept = keep_largest_component(mask)
    assert kept[0:2, 0:2, 0].all() and kept[2, 2, 1]
    assert not kept[4:6, 4:6, 2].any()


def blobs() -> np.ndarray:
    """Class 1 block, class 2 block beside it, and far away a small class-1 island."""
    labels = np.zeros((20, 20, 4), np.int16)
    labels[2:8, 2:8, 1:3] = 1
    labels[8:12, 2:8, 1:3] = 2  # touches class 1: one foreground component with it
    labels[16:18, 16:18, 2] = 1  # island
    return labels


def test_rule_removes_islands_in_order_and_leaves_its_input_alone() -> None:
    labels = blobs()
    labels[2:4, 12:14, 0] = 2  # a class-2 piece apart from the rest
    original = labels.copy()
    foreground_only = PostprocessingRule(largest_foreground=True).apply(labels)
    assert not foreground_only[16:18, 16:18, 2].any() and not foreground_only[2:4, 12:14, 0].any()
    assert (foreground_only[2:12, 2:8, 1:3] == original[2:12, 2:8, 1:3]).all()
    class_two = PostprocessingRule(largest_of_classes=(2,)).apply(labels)
    assert not class_two[2:4, 12:14, 0].any() and class_two[16:18, 16:18, 2].all()  # class 1's island stays
    np.testing.assert_array_equal(labels, original)


def test_determine_keeps_what_raises_dice_and_nothing_else() -> None:
    reference = blobs()
    reference[16:18, 16:18, 2] = 0  # the island is a false positive ...
    real_second_piece = blobs()
    real_second_piece[16:18, 16:18, 2] = 0
    real_second_piece[15:19, 2:6, 0:2] = 2  # ... while this second class-2 piece is real
    prediction = blobs()
    prediction[15:19, 2:6, 0:2] = 2
    choice = determine_postprocessing([(prediction, real_second_piece)], [1, 2])
    # the foreground step removes the island (class 1 up) but also the real class-2 piece (class 2 down)
    raw, after = choice.dice["raw"], choice.dice["largest_foreground"]
    assert after[1] > raw[1] and after[2] < raw[2]
    assert choice.rule.largest_foreground == (np.mean(list(after.values())) > np.mean(list(raw.values())))
    only_islands = determine_postprocessing([(blobs(), reference)], [1, 2])
    assert only_islands.rule.largest_foreground
    assert only_islands.dice["chosen"][1] == pytest.approx(1.0)
    clean = determine_postprocessing([(reference, reference)], [1, 2])
    assert clean.rule == PostprocessingRule()  # nothing to gain: nothing chosen


def test_rule_file_round_trip_and_refusals(tmp_path: Path) -> None:
    rule = PostprocessingRule(largest_foreground=True, largest_of_classes=(1, 3))
    path = rule.save(tmp_path / "postprocessing.json", {"raw": {"1": 0.5}})
    assert PostprocessingRule.load(path) == rule
    (tmp_path / "other.json").write_text(json.dumps({"labels": {}}))
    for bad in (tmp_path / "missing.json", tmp_path / "other.json"):
        with pytest.raises(MaskSamError, match=str(bad.name)):
            PostprocessingRule.load(bad)


def _write(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0])), str(path))


@pytest.mark.slow  # two runs of the console script: 10-15 s here
def test_installed_command_determines_and_applies(tmp_path: Path) -> None:
    masksam = shutil.which("masksam")
    assert masksam, "the masksam console script is not installed"
    reference = blobs()
    reference[16:18, 16:18, 2] = 0
    for case in ("a", "b"):
        _write(blobs(), tmp_path / "pred" / f"{case}.nii.gz")
        _write(reference, tmp_path / "gt" / f"{case}.nii.gz")
    determined = subprocess.run(
        [masksam, "postprocess", "determine", str(tmp_path / "pred"), str(tmp_path / "gt")],
        capture_output=True,
        text=True,
    )
    assert determined.returncode == 0, determined.stderr
    rule_path = tmp_path / "pred" / "postprocessing.json"
    assert PostprocessingRule.load(rule_path).largest_foreground
    applied = subprocess.run(
        [masksam, "postprocess", "apply", str(tmp_path / "pred"), str(tmp_path / "out"), "-r", str(rule_path)],
        capture_output=True,
        text=True,
    )
    assert applied.returncode == 0, applied.stderr
    written = nib.load(str(tmp_path / "out" / "a.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), reference)
    np.testing.assert_allclose(written.affine, np.diag([1.5, 1.5, 8.0, 1.0]))
    same_folder = subprocess.run(
        [masksam, "postprocess", "apply", str(tmp_path / "pred"), str(tmp_path / "pred"), "-r", str(rule_path)],
        capture_output=True,
        text=True,
    )
    assert same_folder.returncode == 1
    assert same_folder.stderr.count("\n") == 1 and "another folder" in same_folder.stderr
    no_rule = subprocess.run(
        [masksam, "postprocess", "apply", str(tmp_path / "pred"), str(tmp_path / "x"), "-r", str(tmp_path / "no.json")],
        capture_output=True,
        text=True,
    )
    assert no_rule.returncode == 1 and "postprocess determine" in no_rule.stderr
