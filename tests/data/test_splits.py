"""Cross-validation splits: patient grouping, coverage, reproducibility, nnU-Net format."""

from __future__ import annotations

import json

import pytest

from masksam.data.splits import group_of, make_splits, write_splits

ACDC_LIKE = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 21) for f in (1, 2)]


@pytest.mark.parametrize(
    ("case_id", "group"),
    [
        ("patient001_frame01", "patient001"),
        ("patient001_frame02", "patient001"),
        ("case_007", "case_007"),
        ("amos_0001", "amos_0001"),
        ("subj3_tp2", "subj3"),
    ],
)
def test_group_of(case_id, group):
    assert group_of(case_id) == group


@pytest.mark.parametrize(
    ("cases", "folds"), [(ACDC_LIKE, 5), ([f"case_{i:03d}" for i in range(13)], 5), (ACDC_LIKE, 3)]
)
def test_folds_partition_cases_and_keep_patients_together(cases, folds):
    splits = make_splits(cases, num_folds=folds, seed=1)
    assert len(splits) == folds
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(cases)
    assert sum(len(v) for v in vals) == len(cases)
    for split in splits:
        assert set(split["train"]).isdisjoint(split["val"])
        assert set(split["train"]) | set(split["val"]) == set(cases)
        assert {group_of(c) for c in split["train"]}.isdisjoint({group_of(c) for c in split["val"]})
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 2


def test_reproducible_from_seed(tmp_path):
    assert make_splits(ACDC_LIKE, seed=3) == make_splits(list(reversed(ACDC_LIKE)), seed=3)
    assert make_splits(ACDC_LIKE, seed=3) != make_splits(ACDC_LIKE, seed=4)
    write_splits(make_splits(ACDC_LIKE, seed=3), tmp_path / "splits_final.json")
    loaded = json.loads((tmp_path / "splits_final.json").read_text())
    assert loaded == make_splits(ACDC_LIKE, seed=3)
    assert set(loaded[0]) == {"train", "val"}


def test_too_few_patients():
    with pytest.raises(ValueError, match="patients"):
        make_splits(["a_frame01", "a_frame02", "b"], num_folds=5)
