"""One preprocessed cache per dataset and plans: reused when it fits, rebuilt when made under other plans or
from other raw files, published whole (never half a cache), and caches of older model folders still read."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from masksam.data import cache_folder
from masksam.data.cache import CaseCache
from masksam.data.cache_folder import build_cache, cache_folder_name
from masksam.data.io import list_cases, read_dataset_json
from masksam.data.pipeline import plan_and_preprocess, prepare_for_training
from masksam.data.plans import Plans
from masksam.data.preprocessing import cache_key
from masksam.errors import DatasetError


def file_identities(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file in a cache folder: unchanged when nothing was written again."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(folder.iterdir())}


@pytest.fixture
def planned(dataset: Path, tmp_path: Path) -> Path:
    """The plans folder of the 3-case synthetic dataset, planned and preprocessed as ``masksam plan`` does."""
    plans_dir = tmp_path / "preprocessed" / dataset.name
    plan_and_preprocess(dataset, plans_dir, num_workers=0, progress=False)
    return plans_dir


def test_plan_names_the_cache_by_its_plans(planned: Path) -> None:
    plans = Plans.load(planned)
    assert plans.preprocessed_folder == cache_folder_name(plans)
    assert plans.preprocessed_folder.startswith("preprocessed_") and (planned / plans.preprocessed_folder).is_dir()
    assert not [path.name for path in planned.iterdir() if path.name.startswith(".")]  # no temporary folder left


def test_training_after_plan_reuses_the_cache(dataset: Path, planned: Path) -> None:
    folder = planned / Plans.load(planned).preprocessed_folder
    before = file_identities(folder)
    prepared = prepare_for_training(dataset, planned, num_workers=0, progress=False)
    assert (prepared.action, prepared.preprocessed, prepared.cases) == ("reused", 0, 3)
    assert file_identities(folder) == before
    assert "reused" in prepared.describe() and str(folder) in prepared.describe()


def test_a_cache_made_under_other_plans_is_not_reused(dataset: Path, planned: Path) -> None:
    old = json.loads((planned / "plans.json").read_text())
    old_folder = planned / old["preprocessed_folder"]
    before = file_identities(old_folder)
    edited = {**old, "target_spacing": [3.0, 1.5, 1.5]}  # plans.json now asks for another through-plane spacing
    (planned / "plans.json").write_text(json.dumps(edited))

    prepared = prepare_for_training(dataset, planned, num_workers=0, progress=False)
    assert (prepared.action, prepared.preprocessed) == ("rebuilt", 3)
    assert "made under other plans" in prepared.describe()
    plans = Plans.load(planned)
    assert plans.target_spacing == (3.0, 1.5, 1.5)
    assert plans.preprocessed_folder == cache_folder_name(plans) != old["preprocessed_folder"]
    new_cache, old_cache = CaseCache(planned / plans.preprocessed_folder), CaseCache(old_folder)
    assert new_cache.read("case_000").label.shape[0] > old_cache.read("case_000").label.shape[0]  # 3 mm, not 6
    case = list_cases(dataset, read_dataset_json(dataset))[0]
    assert new_cache.read(case.case_id).properties["cache_key"] == cache_key(case, plans)
    assert file_identities(old_folder) == before  # a run still reading the old cache is not disturbed


def test_a_changed_raw_file_is_preprocessed_again_alone(dataset: Path, planned: Path) -> None:
    folder = planned / Plans.load(planned).preprocessed_folder
    before = file_identities(folder)
    image = dataset / "imagesTr" / "case_001_0000.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))

    prepared = prepare_for_training(dataset, planned, num_workers=0, progress=False)
    assert (prepared.action, prepared.preprocessed) == ("rebuilt", 1)
    after = file_identities(folder)
    assert after.keys() == before.keys()
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"case_001.npy", "case_001_seg.npy", "case_001_fg.npy", "case_001.json"}


def test_a_cache_appears_whole_or_not_at_all(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cases = list_cases(dataset, read_dataset_json(dataset))
    plans_dir = tmp_path / "plans"
    plans = plan_and_preprocess(dataset, plans_dir, num_workers=0, preprocess=False, progress=False).plans
    folder = plans_dir / cache_folder_name(plans)
    preprocess = cache_folder.preprocess_training_case
    seen = []

    def preprocess_and_look(job):
        assert not folder.exists()  # nothing under the final name while cases are being written
        seen.append(job[0].case_id)
        if len(seen) == 2:
            raise DatasetError(f"case {job[0].case_id}: unreadable")
        return preprocess(job)

    monkeypatch.setattr(cache_folder, "preprocess_training_case", preprocess_and_look)
    with pytest.raises(DatasetError):
        build_cache(cases, plans, plans_dir, num_workers=0, progress=False)
    assert not folder.exists()
    assert [path.name for path in plans_dir.iterdir() if path.is_dir()] == []  # the partial copy is gone

    monkeypatch.setattr(cache_folder, "preprocess_training_case", preprocess)
    result = build_cache(cases, plans, plans_dir, num_workers=0, progress=False)
    assert (result.written, result.skipped) == (3, 0) and CaseCache(folder).case_ids() == [c.case_id for c in cases]


def test_a_cache_published_first_by_another_process_is_kept(dataset: Path, planned: Path) -> None:
    plans = Plans.load(planned)
    folder = planned / plans.preprocessed_folder
    before = file_identities(folder)
    ours = planned / f".{folder.name}.ours"
    shutil.copytree(folder, ours)
    cache_folder._publish(ours, folder, list_cases(dataset, read_dataset_json(dataset)), plans)
    assert file_identities(folder) == before


def test_the_cache_of_a_model_folder_from_an_older_masksam_is_reused(dataset: Path, planned: Path) -> None:
    plans = json.loads((planned / "plans.json").read_text())
    (planned / plans["preprocessed_folder"]).rename(planned / "preprocessed")  # the layout before keyed folders
    (planned / "plans.json").write_text(json.dumps({**plans, "preprocessed_folder": "preprocessed"}))
    prepared = prepare_for_training(dataset, planned, num_workers=0, progress=False)
    assert prepared.action == "reused" and prepared.plans.preprocessed_folder == "preprocessed"
