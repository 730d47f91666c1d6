"""benchmarks/bench_predict_acdc.py and dataset_subset.py: a clear line when the dataset is not on this machine,
and only the predicted cases planned (linked, not preprocessed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from data.dataset_builders import make_dataset

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_predict_acdc.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_predict_acdc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        pytest.param(["--dataset", "{tmp}/absent"], "absent: no dataset.json there; pass --dataset DIR", id="dataset"),
        pytest.param(["--dataset", "{dataset}", "--plans", "{tmp}"], "no plans.json there", id="plans"),
    ],
)
def test_a_missing_folder_is_one_line_naming_the_option(tmp_path, arguments, fragment):
    dataset = make_dataset(tmp_path / "Dataset001_X", num_cases=1, shape=(6, 6, 2))
    arguments = [a.format(tmp=tmp_path, dataset=dataset) for a in arguments]
    done = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_only_the_predicted_cases_are_planned_and_nothing_is_preprocessed(bench, tmp_path):
    dataset = make_dataset(tmp_path / "Dataset001_X", num_cases=5, shape=(16, 14, 4))
    plans = bench.plans_folder(dataset, ["case_001", "case_003"], None, tmp_path / "scratch")
    splits = json.loads((plans / "splits_final.json").read_text())
    assert sorted({c for fold in splits for c in fold["train"] + fold["val"]}) == ["case_001", "case_003"]
    assert (plans / "plans.json").is_file()
    preprocessed = plans / "preprocessed"
    assert not preprocessed.exists() or not any(preprocessed.iterdir())
    linked = tmp_path / "scratch" / "raw" / "Dataset001_X"
    assert all(p.is_symlink() for p in (linked / "imagesTr").iterdir())
    assert json.loads((linked / "dataset.json").read_text())["numTraining"] == 2


def test_given_plans_are_used_as_they_are(bench, tmp_path):
    assert bench.plans_folder(tmp_path / "data", ["a"], tmp_path / "plans", tmp_path / "scratch") == tmp_path / "plans"
    assert not (tmp_path / "scratch").exists()


def test_write_subset_names_a_missing_case(bench, tmp_path):
    dataset = make_dataset(tmp_path / "Dataset001_X", num_cases=1, shape=(6, 6, 2))
    with pytest.raises(SystemExit, match=r"case_009_0000.nii.gz: not found; choose case ids of"):
        bench.write_subset(dataset, ["case_009"], tmp_path / "out")
