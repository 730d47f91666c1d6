"""The installed ``masksam`` script as a shell user meets it: one-line usage errors with exit code 2, ``--version``,
and Ctrl-C that exits 130 with one line saying what was kept and how to go on.

These run the console script itself (``shutil.which("masksam")``), not ``python -m masksam`` or typer's test
runner, so the entry point, the installed typer and the real signal path are what is tested.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from data.dataset_builders import planned_synthetic_dataset
from inference.builders import planned_plans, save_tiny_checkpoint, synthetic_image, write_case

from masksam.cli.train_command import resume_command, what_training_kept
from masksam.training.checkpoint import read_checkpoint

MASKSAM = shutil.which("masksam")
needs_script = pytest.mark.skipif(
    MASKSAM is None, reason="the masksam console script is not installed (pip install -e .)"
)
# The child processes share the machine with the test run: one thread each.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_masksam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MASKSAM, *args], capture_output=True, text=True, timeout=120, env=ENV)


# A test run started in the background by a shell without job control (`pytest &`, CI runners) ignores SIGINT, and
# children inherit that: masksam would never see the Ctrl-C. This prefix gives it a terminal's default SIGINT first
# (a handler set to default survives exec; an ignored one would not be undone).
WITH_CTRL_C = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]  # fmt: skip


def interrupt_when(args: list[str], ready: Callable[[], bool], *, cwd: Path, timeout: float = 180) -> tuple[int, str]:
    """Runs ``masksam ARGS`` in ``cwd`` and sends SIGINT to its process group, as Ctrl-C in a terminal does (data
    workers included), once ``ready()``.

    Returns:
        (exit code, stderr).
    """
    stderr_path = cwd / "stderr.txt"  # a file, not a pipe: nobody reads a pipe while we wait
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [*WITH_CTRL_C, MASKSAM, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"masksam ended before the interrupt ({process.returncode}): {stderr_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"masksam {' '.join(args)} did not get to the point of the interrupt in {timeout} s")
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stderr_path.read_text()


def finished_outputs(folder: Path) -> list[str]:
    """Names of the label maps in ``folder`` (not the hidden temporary files of a write in progress)."""
    return sorted(path.name for path in folder.glob("*.nii.gz") if not path.name.startswith("."))


@needs_script
@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["predict", "-i", "in", "-o", "out"], "'--model' / '-m'", id="missing-option"),
        pytest.param(["train"], "'--output' / '-o'", id="missing-option-of-train"),
        pytest.param(["train", "-o", "out"], "dataset_dir / -d", id="missing-argument"),
        pytest.param(["plan", "data", "-d", "27"], "dataset_dir / -d", id="dataset-given-twice"),
        pytest.param(["foo"], "'foo'", id="unknown-command"),
        pytest.param(
            ["predict", "-i", "in", "-o", "out", "-m", "m", "--disable_tta"], "--disable_tta", id="unknown-option"
        ),
        pytest.param(["predict", "-i", "in", "-o", "out", "-m", "m", "--step", "0"], "'--step'", id="out-of-range"),
        pytest.param(["train", "data", "-o", "out", "--epochs", "many"], "'--epochs'", id="not-a-number"),
        pytest.param(["predict", "-i", "in", "-o", "out", "-m", "m", "extra"], "extra", id="extra-argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], named: str) -> None:
    result = run_masksam(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("masksam: error: ") and named.lower() in lines[0].lower()
    command = "masksam" if args == ["foo"] else f"masksam {args[0]}"
    assert lines[0].endswith(f"Try '{command} --help'.")


@needs_script
def test_no_command_shows_the_help_with_exit_code_2() -> None:
    result = run_masksam()
    assert result.returncode == 2
    assert "Usage" in result.stdout + result.stderr and "Traceback" not in result.stderr


@needs_script
def test_version_comes_from_the_package_metadata() -> None:
    result = run_masksam("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"masksam {version('masksam')}\n" and result.stderr == ""


@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of 60 small cases, model folder with one tiny fold): enough cases to interrupt in the middle."""
    root = tmp_path_factory.mktemp("interrupt_predict")
    save_tiny_checkpoint(root / "model", planned_plans(root / "dataset"), fold=0, name="final")
    image = synthetic_image((40, 36, 8))
    affine = [[1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 6.0, 0], [0, 0, 0, 1]]
    for index in range(60):
        write_case(root / "in", f"case_{index:03d}", [image], affine)
    return root / "in", root / "model"


@pytest.mark.slow  # the console script predicting until interrupted: 7-10 s on a shared machine
@needs_script
def test_ctrl_c_in_predict_says_how_many_cases_were_written(tmp_path: Path, predict_setup: tuple[Path, Path]) -> None:
    inputs, model = predict_setup
    output = tmp_path / "out"
    args = ["predict", "-i", str(inputs), "-o", str(output), "-m", str(model), "--no-tta", "--device", "cpu"]
    code, stderr = interrupt_when(args, lambda: output.is_dir() and bool(finished_outputs(output)), cwd=tmp_path)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    written = finished_outputs(output)
    assert 1 <= len(written) < 60
    assert sorted(path.name for path in output.iterdir()) == written  # the case in progress left no temporary
    assert stderr.strip().splitlines()[-1] == (
        f"masksam: interrupted: {len(written)} of 60 case(s) written to {output}; run the same command with "
        "--continue to skip the cases already written"
    )


@needs_script
@pytest.mark.slow  # about 10 s: planning the dataset, then one epoch before the interrupt
def test_ctrl_c_in_train_names_the_checkpoint_and_the_resume_command(tmp_path: Path) -> None:
    raw, plans_dir = planned_synthetic_dataset(tmp_path / "data")
    output = tmp_path / "model"
    latest = output / "fold_0" / "checkpoint_latest.pt"
    args = [
        "train", str(raw), "-o", str(output), "--plans", str(plans_dir), "--backbone", "tiny", "--device", "cpu",
        "-j", "1", "--epochs", "100", "--iters-per-epoch", "1", "--batch-size", "1", "--val-patches", "1",
    ]  # fmt: skip
    code, stderr = interrupt_when(args, latest.is_file, cwd=tmp_path)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    expected_command = shlex.join(
        ["masksam", "train", str(raw), "-o", str(output), "--fold", "0", "--plans", str(plans_dir), "--device", "cpu",
         "--continue"]
    )  # fmt: skip
    assert line == (
        f"masksam: interrupted: the last finished epoch's checkpoint is in {output / 'fold_0'} "
        f"(checkpoint_latest.pt); `{expected_command}` resumes"
    )
    assert read_checkpoint(latest)["epoch"] >= 1


OPTIONS = {"dataset_dir": Path("raw data"), "output": Path("runs/x"), "plans_dir": None, "checkpoint": None}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"device": "auto"}, "masksam train 'raw data' -o runs/x --fold 2 --continue", id="defaults"),
        pytest.param(
            {"device": "cuda", "plans_dir": Path("p"), "checkpoint": Path("sam.pth")},
            "masksam train 'raw data' -o runs/x --fold 2 --plans p --checkpoint sam.pth --device cuda --continue",
            id="where-it-runs",
        ),
    ],
)
def test_resume_command_repeats_where_the_run_is(options: dict, expected: str) -> None:
    assert resume_command({**OPTIONS, **options}, fold=2) == expected


def test_what_training_kept_depends_on_the_checkpoints_found(tmp_path: Path) -> None:
    command = "masksam train d -o m --fold 0 --continue"
    assert what_training_kept(tmp_path, stage="setup", save_every=1, resume_command=command).startswith(
        "no epoch had finished, so no checkpoint was kept"
    )
    (tmp_path / "checkpoint_latest.pt").write_bytes(b"")
    assert what_training_kept(tmp_path, stage="training", save_every=5, resume_command=command) == (
        f"the last saved epoch's checkpoint is in {tmp_path} (checkpoint_latest.pt); `{command}` resumes"
    )
    (tmp_path / "checkpoint_final.pt").write_bytes(b"")
    assert "the final validation was cut short" in what_training_kept(
        tmp_path, stage="validation", save_every=1, resume_command=command
    )
