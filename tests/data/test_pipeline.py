"""`plan_and_preprocess`: synthetic and real (ACDC) datasets end to end, idempotence, nothing written on errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_builders import make_dataset

from masksam.data.cache import CaseCache
from masksam.data.pipeline import plan_and_preprocess
from masksam.data.plans import Plans
from masksam.data.validation import DatasetValidationError


def test_synthetic_end_to_end_and_rerun_skips(dataset, tmp_path):
    out = tmp_path / "plans"
    result = plan_and_preprocess(dataset, out, num_workers=0, progress=False)
    assert (result.written, result.skipped) == (3, 0)
    plans = Plans.load(out)
    names = {p.name for p in out.iterdir()}
    cache = plans.preprocessed_folder  # preprocessed_<key of the plans> (see test_cache_folder.py)
    assert names == {"plans.json", "dataset.json", "dataset_fingerprint.json", "splits_final.json", cache}
    assert plans.preset is None and plans.transpose == (2, 0, 1)
    assert plans.target_spacing == (6.0, 1.5, 1.5)
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 3  # three patients: as many folds
    cached = CaseCache(out / cache).read("case_000")
    assert cached.image.shape[0] == 1 and cached.image.shape[1:] == cached.label.shape
    again = plan_and_preprocess(dataset, out, num_workers=0, progress=False)
    assert (again.written, again.skipped) == (0, 3)


def test_invalid_dataset_writes_nothing(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetValidationError):
        plan_and_preprocess(root, tmp_path / "plans", num_workers=0, progress=False)
    assert not (tmp_path / "plans").exists()


def test_real_acdc_cases(acdc_small, tmp_path):
    out = tmp_path / "plans"
    result = plan_and_preprocess(acdc_small, out, num_workers=0, progress=False)
    plans = result.plans
    assert plans.preset == "acdc" and plans.patch_size == (4, 256, 256) and plans.num_queries == 8
    assert plans.spacing_known is False and plans.transpose == (2, 0, 1)
    assert plans.normalization[0].scheme == "zscore"
    cache = CaseCache(out / plans.preprocessed_folder)
    assert cache.case_ids() == ["patient001_frame01", "patient001_frame02", "patient002_frame01"]
    case = cache.read("patient001_frame01")
    assert case.label.shape == (10, 96, 96)  # 10 short-axis slices first
    assert set(np.unique(case.label).tolist()) == {0, 1, 2, 3}
    assert abs(float(np.mean(case.image))) < 0.2
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2
    for split in splits:  # both frames of patient001 on the same side
        assert ("patient001_frame01" in split["val"]) == ("patient001_frame02" in split["val"])
