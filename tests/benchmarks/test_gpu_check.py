"""benchmarks/gpu_check.py: the bundle it carries, steps killed with their children at their limit, a step
proven by what it wrote (not only by its exit status), skipped steps, and the summary table."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest
from data.dataset_builders import make_dataset

REPO = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    module = load("gpu_check")
    yield module
    del sys.modules["gpu_check"]


PATIENT_CASES = [f"patient{p:03d}_frame0{f}" for p in range(1, 6) for f in (1, 2)]


@pytest.fixture
def bundle(gpu_check, tmp_path):
    dataset = make_dataset(tmp_path / "Dataset027_ACDC", case_names=PATIENT_CASES, shape=(12, 10, 4))
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really weights")
    arguments = ["bundle", "-o", str(tmp_path / "bundle"), "--dataset", str(dataset), "--weights", str(weights)]
    return gpu_check, dataset, tmp_path / "bundle", arguments


def make_bundle(gpu_check, arguments: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", *arguments])
    with pytest.raises(SystemExit) as exited:
        gpu_check.main()
    return exited.value.code


def test_bundle_holds_training_and_held_out_patients_and_the_weights(bundle, monkeypatch):
    gpu_check, _, output, arguments = bundle
    assert make_bundle(gpu_check, arguments, monkeypatch) == 0
    dataset = gpu_check.find_dataset(output)
    assert dataset == output / "Dataset027_ACDC"
    train = sorted(p.name for p in (dataset / "labelsTr").iterdir())
    assert train == [f"{c}.nii.gz" for c in PATIENT_CASES[:6]]  # three patients, both frames
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [f"{c}_0000.nii.gz" for c in PATIENT_CASES[6:8]]
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == [f"{c}.nii.gz" for c in PATIENT_CASES[6:8]]
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 6
    assert (output / "lite_medsam.pth").read_bytes() == b"not really weights"
    assert not any(p.is_symlink() for p in output.rglob("*"))  # copies: the folder travels to another machine


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        pytest.param(["--train-patients", "4", "--test-patients", "2"], "5 patients", id="too-few-patients"),
        pytest.param(["--train-patients", "1"], "at least 2", id="no-validation-fold"),
        pytest.param(["--weights", "/nonexistent/lite_medsam.pth"], "masksam weights lite_medsam", id="no-weights"),
        pytest.param(["--dataset", "/nonexistent"], "pass --dataset DIR", id="no-dataset"),
    ],
)
def test_bundle_refuses_with_one_line(bundle, monkeypatch, extra, fragment):
    gpu_check, _, output, arguments = bundle
    code = make_bundle(gpu_check, arguments + extra, monkeypatch)
    assert isinstance(code, str) and fragment in code and "\n" not in code
    assert not output.exists()


def test_find_dataset_names_what_the_bundle_lacks(gpu_check, tmp_path):
    with pytest.raises(SystemExit, match="expected one dataset folder"):
        gpu_check.find_dataset(tmp_path)
    make_dataset(tmp_path / "Dataset001_X", num_cases=1, shape=(6, 6, 2))
    with pytest.raises(SystemExit, match="no imagesTs/labelsTs"):
        gpu_check.find_dataset(tmp_path)
    (tmp_path / "Dataset001_X" / "imagesTs").mkdir()
    (tmp_path / "Dataset001_X" / "labelsTs").mkdir()
    with pytest.raises(SystemExit, match="lite_medsam.pth: not found"):
        gpu_check.find_dataset(tmp_path)


def python_step(gpu_check, code: str, proof=lambda output: ["proven"]):
    return gpu_check.Step("demo", [sys.executable, "-c", code], proof)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


@pytest.mark.slow
def test_a_step_over_its_limit_is_killed_with_its_children(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "KILL_GRACE_SECONDS", 2)
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('CHILD', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = gpu_check.run_step(python_step(gpu_check, code), 2, tmp_path, dict(os.environ))
    assert outcome.status == "TIMEOUT" and time.monotonic() - started < 15
    (line,) = [line for line in outcome.log.read_text().splitlines() if line.startswith("CHILD")]
    pid = int(line.split()[1])
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


@pytest.mark.parametrize(
    ("code", "proof", "status", "fragment"),
    [
        pytest.param("print('done')", None, "ok", "proven", id="ok"),
        pytest.param("import sys; print('boom'); sys.exit(3)", None, "FAILED", "exit status 3", id="exit-status"),
        pytest.param("print('done')", "raise", "FAILED", "not proven: checkpoint missing", id="exit-0-not-proven"),
    ],
)
def test_a_step_is_ok_only_when_it_exits_0_and_its_proof_holds(gpu_check, tmp_path, code, proof, status, fragment):
    def missing(output: str) -> list[str]:
        raise gpu_check.NotProven("checkpoint missing")

    step = python_step(gpu_check, code, missing if proof == "raise" else (lambda output: ["proven"]))
    outcome = gpu_check.run_step(step, 30, tmp_path, dict(os.environ))
    assert outcome.status == status
    assert any(fragment in line for line in outcome.evidence)
    if status == "FAILED" and proof is None:
        assert "boom" in outcome.evidence  # the output's last lines say why


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_steps_run_every_part_on_the_chosen_device(gpu_check, tmp_path, device):
    budgets = gpu_check.BUDGETS[device]
    steps = gpu_check.build_steps(tmp_path, tmp_path / "data", tmp_path / "work", device, budgets)
    names = [step.name for step in steps]
    assert names == list(budgets.limits)  # every step has a limit, in the order they run
    by_name = {step.name: step.command for step in steps}
    for name in ("train", "predict", "bench-step", "bench-compile", "bench-predict"):
        command = by_name[name]
        assert command[command.index("--device") + 1] == device, name
    train = by_name["train"]
    assert train[train.index("--time-budget") + 1] == str(budgets.train_minutes)
    assert train[train.index("--backbone") + 1] == ("lite_medsam" if device == "cuda" else "tiny")
    assert "--compile" in by_name["bench-compile"] and "--compile" not in by_name["bench-step"]
    compiled = by_name["bench-compile"]
    assert compiled[compiled.index("--compile-backend") + 1] == ("inductor" if device == "cuda" else "eager")
    assert ("--no-tta" in by_name["predict"]) == (device == "cpu")
    assert by_name["gpu-tests"][-4:] == ["-rs", "-p", "no:cacheprovider", str(REPO / "tests")]


def test_without_time_every_step_is_skipped_and_the_summary_says_so(bundle, monkeypatch, tmp_path):
    gpu_check, _, output, arguments = bundle
    make_bundle(gpu_check, arguments, monkeypatch)
    work = tmp_path / "work"
    arguments = ["run", str(output), "--device", "cpu", "--work", str(work), "--minutes", "0"]
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", *arguments])
    with pytest.raises(SystemExit) as exited:
        gpu_check.main()
    assert exited.value.code == 0
    summary = (work / "summary.md").read_text().splitlines()
    rows = [line for line in summary if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(gpu_check.BUDGETS["cpu"].limits)
    assert all(" | skipped | " in row for row in rows)
    assert "no time left" in rows[0] and "needs environment" in rows[1]


def test_table_lines_are_the_benchmark_table(gpu_check):
    compiled = "compile (tree, tiny 64², fp32+compile): first training step 9.1 s ..."
    output = f"noise\nrow | s\n--- | ---\ntiny | 0.1\n{compiled}\n  graph break: a reason\n"
    assert gpu_check.table_lines(output) == ["row | s", "tiny | 0.1", compiled, "  graph break: a reason"]
    with pytest.raises(gpu_check.NotProven):
        gpu_check.table_lines("Traceback ...\n")
