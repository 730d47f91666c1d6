"""``masksam predict``: a folder in, label maps out with the inputs' geometry; one error line per bad case."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import typer
from inference.builders import planned_plans, save_tiny_checkpoint, synthetic_image, tiny_config, write_case
from typer.testing import CliRunner

from masksam.cli.predict_command import parse_folds, predict, prompt_labels_path
from masksam.errors import CheckpointError, ConfigError, DatasetError, MaskSamError
from masksam.inference.predictor import Predictor
from masksam.model.masksam import build_masksam
from masksam.training.checkpoint import BackboneSource, model_payload, save_atomic

MASKSAM = shutil.which("masksam")
needs_script = pytest.mark.skipif(MASKSAM is None, reason="the masksam console script is not installed")


def run_masksam(*args: str) -> subprocess.CompletedProcess:
    """The installed console script (one thread: it shares the machine with the test run)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([MASKSAM, *args], capture_output=True, text=True, timeout=120, env=environment)


app = typer.Typer(pretty_exceptions_enable=False)
app.command()(predict)
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training folder with fold 0 finished (final) and fold 1 unfinished (latest only)."""
    root = tmp_path_factory.mktemp("model")
    plans = planned_plans(root / "dataset")
    save_tiny_checkpoint(root / "model", plans, fold=0, name="final", seed=0)
    save_tiny_checkpoint(root / "model", plans, fold=1, name="latest", seed=1)
    return root / "model"


@pytest.fixture(scope="module")
def ground_truth_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training folder with one finished fold of a ground_truth prompt mode model."""
    root = tmp_path_factory.mktemp("gt_model")
    plans = planned_plans(root / "dataset")
    torch.manual_seed(0)
    model = build_masksam(tiny_config(plans, prompt_mode="ground_truth"))
    save_atomic(
        model_payload(model, plans, BackboneSource(name="tiny")), root / "model" / "fold_0" / "checkpoint_final.pt"
    )
    return root / "model"


def oblique(flip: bool = False) -> np.ndarray:
    affine = np.diag([-1.5 if flip else 1.5, 1.5, 6.0, 1.0])
    angle = np.deg2rad(30)
    affine[:2, :2] = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ affine[:2, :2]
    affine[:3, 3] = [5.0, -7.0, 11.0]
    return affine


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def test_bad_cases_get_one_line_each_and_the_others_are_written(tmp_path: Path, model_dir: Path) -> None:
    inputs = tmp_path / "in"
    good = {"good_a": oblique(), "good_b": oblique(flip=True)}
    for case_id, affine in good.items():
        write_case(inputs, case_id, [synthetic_image((40, 36, 8))], affine)
    write_case(inputs, "twochan", [synthetic_image((40, 36, 8))] * 2, oblique())
    (inputs / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (inputs / "README.txt").write_text("notes")
    result = invoke("-i", inputs, "-o", tmp_path / "out", "-m", model_dir, "--folds", "0", "--no-tta")
    assert result.exit_code == 1
    assert isinstance(result.exception, MaskSamError)
    assert str(result.exception).startswith("2 of 4 case(s) failed (broken, twochan)")
    lines = error_lines(result.stderr)
    assert len(lines) == 2, result.stderr
    assert "case broken" in lines[0] and "broken_0000.nii.gz: unreadable NIfTI" in lines[0]
    assert "case twochan" in lines[1] and "needs 1 channel(s)" in lines[1]
    assert "move twochan_0001.nii.gz out of the input folder, or predict with a model trained on 2 channels" in lines[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_a.nii.gz", "good_b.nii.gz"]
    for case_id, affine in good.items():
        np.testing.assert_allclose(nib.load(str(inputs / f"{case_id}_0000.nii.gz")).affine, affine, atol=1e-5)
        image = nib.load(str(tmp_path / "out" / f"{case_id}.nii.gz"))
        np.testing.assert_array_equal(image.affine, nib.load(str(inputs / f"{case_id}_0000.nii.gz")).affine)
        assert image.shape == (40, 36, 8) and image.get_data_dtype() == np.uint8
    assert "wrote 2 of 4 case(s)" in result.stdout


def test_allow_unfinished_takes_the_latest_checkpoint_with_a_warning(tmp_path: Path, model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    args = ["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--save-probabilities", "--no-tta"]
    result = invoke(*args, "--allow-unfinished")
    assert result.exit_code == 0, result.output
    assert "fold_1/checkpoint_final.pt not found" in result.stderr and "checkpoint_latest.pt" in result.stderr
    assert "with 2 fold(s)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case.nii.gz", "case.npz"]
    with np.load(tmp_path / "out" / "case.npz") as stored:
        probabilities = stored["probabilities"]
    assert probabilities.shape == (3, 8, 36, 40)  # nnU-Net's (C, z, y, x) of a (40, 36, 8) file
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
    labels = np.asarray(nib.load(str(tmp_path / "out" / "case.nii.gz")).dataobj)  # (x, y, z)
    assert np.mean(probabilities.argmax(axis=0).T == labels) > 0.95  # the same classes win, up to resampling


@needs_script
@pytest.mark.slow
def test_default_ensemble_refuses_an_unfinished_fold(tmp_path: Path, model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    result = run_masksam("predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"masksam: error: {model_dir / 'fold_1'}: training unfinished, no checkpoint_final.pt (has only "
        "checkpoint_latest.pt); finish it with 'masksam train ... --fold 1 --continue', predict with the finished "
        "folds only (-f 0), or pass --allow-unfinished to use the latest checkpoint"
    )
    assert not (tmp_path / "out").exists()


@needs_script
@pytest.mark.slow
def test_a_fold_folder_as_model_folder_gets_the_right_options(tmp_path: Path, model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    fold = model_dir / "fold_0"
    result = run_masksam("predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(fold))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"masksam: error: {fold}: is one fold's folder; -m takes the training output folder above it: "
        f"-m {model_dir} -f 0"
    )


def test_continue_predicts_only_the_missing_cases(tmp_path: Path, model_dir: Path) -> None:
    for case_id in ("done", "missing", "no_scores"):
        write_case(tmp_path / "in", case_id, [synthetic_image((40, 36, 8))], oblique())
    out = tmp_path / "out"
    out.mkdir()
    (out / "done.nii.gz").write_bytes(b"kept as is")
    (out / "done.npz").write_bytes(b"kept as is")
    (out / "no_scores.nii.gz").write_bytes(b"rewritten: its scores are missing")
    args = ["-i", tmp_path / "in", "-o", out, "-m", model_dir, "--folds", "0", "--no-tta", "--save-probabilities"]
    result = invoke(*args, "--continue")
    assert result.exit_code == 0, result.output
    assert "2 case(s) already predicted" not in result.stderr and "1 case(s) already predicted" in result.stderr
    assert "wrote 2 of 2 case(s)" in result.stdout
    assert (out / "done.nii.gz").read_bytes() == b"kept as is"
    assert nib.load(str(out / "no_scores.nii.gz")).shape == (40, 36, 8)
    assert sorted(p.name for p in out.iterdir()) == [
        f"{c}{e}" for c in ("done", "missing", "no_scores") for e in (".nii.gz", ".npz")
    ]
    (out / "done.nii.gz").write_bytes(b"overwritten without --continue")
    result = invoke(*args)
    assert result.exit_code == 0 and "wrote 3 of 3 case(s)" in result.stdout
    assert nib.load(str(out / "done.nii.gz")).shape == (40, 36, 8)


@pytest.mark.parametrize(
    ("make_args", "error", "message"),
    [
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "in", "-m", model],
            ConfigError,
            "the output folder is the input folder",
            id="output-is-input",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "in" / ".." / "in", "-m", model],
            ConfigError,
            "the output folder is the input folder",
            id="output-is-input-by-another-name",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", tmp],
            CheckpointError,
            "no fold_*/checkpoint_final.pt or checkpoint_latest.pt",
            id="model-folder-without-checkpoint",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "-c", "best"],
            CheckpointError,
            "fold_0/checkpoint_best.pt: checkpoint not found",
            id="named-checkpoint-missing",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "-c", "final", "-f", "0,1"],
            CheckpointError,
            "fold_1/checkpoint_final.pt: checkpoint not found",
            id="named-checkpoint-missing-in-a-fold",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "--folds", "0,x"],
            ConfigError,
            "expected fold numbers",
            id="bad-folds",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "missing", "-o", tmp / "out", "-m", model],
            MaskSamError,
            "input folder or file not found",
            id="no-input-folder",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "--prompt-labels", tmp / "nope"],
            DatasetError,
            "nope: prompt labels folder not found",
            id="no-prompt-labels-folder",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "-f0", "--amp=fp16", "--device=cpu"],
            ConfigError,
            "--amp fp16 needs a CUDA GPU",
            id="fp16-on-the-cpu",
        ),
        pytest.param(
            lambda tmp, model: ["-i", tmp / "in", "-o", tmp / "out", "-m", model, "-f", "0", "--amp", "half"],
            ConfigError,
            "unknown --amp 'half'",
            id="unknown-precision",
        ),
    ],
)
def test_refusals_are_one_line_errors(tmp_path: Path, model_dir: Path, make_args, error, message) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    result = invoke(*make_args(tmp_path, model_dir))
    assert result.exit_code == 1
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before  # nothing written into the inputs
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("amp", "name"), [("off", "fp32"), ("bf16", "bf16")])
def test_amp_sets_the_precision_of_the_forward_passes(tmp_path: Path, model_dir: Path, monkeypatch, amp, name) -> None:
    seen = []
    score_patches = Predictor.score_patches

    def recording(self, patches, **kwargs):
        seen.append(self.precision.name)
        return score_patches(self, patches, **kwargs)

    monkeypatch.setattr(Predictor, "score_patches", recording)
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    common = ["-o", tmp_path / "out", "-m", model_dir, "-f", "0", "--no-tta", "--device", "cpu"]
    result = invoke("-i", tmp_path / "in", *common, "--amp", amp)
    assert result.exit_code == 0, result.output
    assert f"on cpu ({name})" in result.stderr and seen and set(seen) == {name}
    assert (tmp_path / "out" / "case.nii.gz").is_file()


def write_labels(folder: Path, case_id: str, image: np.ndarray, affine: np.ndarray, ending: str = ".nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros(image.shape, np.uint8)
    labels[image > 130], labels[image > 200] = 1, 2
    path = folder / f"{case_id}{ending}"
    nib.save(nib.Nifti1Image(labels, affine), str(path))
    return path


def test_ground_truth_model_takes_each_cases_labels(tmp_path: Path, ground_truth_model_dir: Path) -> None:
    """Labels by case id from --prompt-labels; a case without its label file is one error line."""
    image = synthetic_image((40, 36, 8))
    for case_id in ("with_labels", "without_labels"):
        write_case(tmp_path / "in", case_id, [image], oblique())
    label_file = write_labels(tmp_path / "labels", "with_labels", image, oblique())
    args = ["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", ground_truth_model_dir, "--no-tta"]
    result = invoke(*args, "--prompt-labels", tmp_path / "labels")
    assert result.exit_code == 1
    assert str(result.exception).startswith("1 of 2 case(s) failed (without_labels)")
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "case without_labels: prompt labels" in lines[0], result.stderr
    assert f"{tmp_path / 'labels' / 'without_labels.nii.gz'} not found" in lines[0]
    assert "box prompts from" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["with_labels.nii.gz"]
    written = np.asanyarray(nib.load(str(tmp_path / "out" / "with_labels.nii.gz")).dataobj)
    predictor = Predictor.from_checkpoints([ground_truth_model_dir / "fold_0" / "checkpoint_final.pt"], tta=False)
    labels = np.asanyarray(nib.load(str(label_file)).dataobj)
    np.testing.assert_array_equal(written, predictor.predict_array(image[None], oblique(), prompt_labels=labels))


def test_ground_truth_model_without_prompt_labels_is_refused(tmp_path: Path, ground_truth_model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    result = invoke("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", ground_truth_model_dir)
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "prompt_mode 'ground_truth'" in message and "--prompt-labels DIR" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_generated_model_ignores_prompt_labels_with_a_warning(tmp_path: Path, model_dir: Path) -> None:
    image = synthetic_image((40, 36, 8))
    write_case(tmp_path / "in", "case", [image], oblique())
    write_labels(tmp_path / "labels", "case", image, oblique())
    args = ["-i", tmp_path / "in", "-m", model_dir, "-f", "0", "--no-tta"]
    with_labels = invoke(*args, "-o", tmp_path / "a", "--prompt-labels", tmp_path / "labels")
    assert with_labels.exit_code == 0, with_labels.output
    assert "generates its own prompts; --prompt-labels" in with_labels.stderr
    assert invoke(*args, "-o", tmp_path / "b").exit_code == 0
    np.testing.assert_array_equal(
        nib.load(str(tmp_path / "a" / "case.nii.gz")).get_fdata(),
        nib.load(str(tmp_path / "b" / "case.nii.gz")).get_fdata(),
    )


@pytest.mark.parametrize(
    ("present", "ending", "expected"),
    [
        pytest.param(["c.nii.gz", "c.nii"], ".nii.gz", "c.nii.gz", id="same-ending"),
        pytest.param(["c.nii.gz", "c.nii"], ".nii", "c.nii", id="same-ending-nii"),
        pytest.param(["c.nii"], ".nii.gz", "c.nii", id="other-ending"),
        pytest.param([], ".nii.gz", "c.nii.gz", id="missing-names-the-expected-file"),
    ],
)
def test_prompt_labels_path(tmp_path: Path, present, ending, expected) -> None:
    for name in present:
        (tmp_path / name).write_bytes(b"x")
    assert prompt_labels_path(tmp_path, "c", ending) == tmp_path / expected


def test_empty_input_folder(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    result = invoke("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "-f", "0")
    assert result.exit_code == 1 and "no CASE_0000.nii.gz files" in str(result.exception)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("0", [0]), ("0, 2,4", [0, 2, 4]), ("all", [-1])],
    ids=["none", "empty", "one", "several", "all"],
)
def test_parse_folds(text, expected) -> None:
    assert parse_folds(text) == expected


def test_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--save-probabilities" in result.output and "--no-tta" in result.output
    assert "--prompt-labels" in result.output


@pytest.mark.slow
def test_console_script_prints_one_line_and_exits_1(tmp_path: Path, model_dir: Path) -> None:
    """Through ``masksam.cli.main`` (registering the command here if the CLI does not have it yet)."""
    import subprocess
    import sys

    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    code = (
        "from masksam.cli import app, main\n"
        "from masksam.cli.predict_command import predict\n"
        "if not any(c.name == 'predict' for c in app.registered_commands):\n"
        "    app.command('predict')(predict)\n"
        "main()\n"
    )
    args = ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "in"), "-m", str(model_dir)]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"masksam: error: {tmp_path / 'in'}: the output folder is the input folder; choose another -o so inputs "
        "are never overwritten"
    ]


@pytest.mark.slow  # the console script end to end: about 6 s
@needs_script
def test_one_file_as_input_predicts_that_case(tmp_path: Path, model_dir: Path) -> None:
    for case_id in ("first", "second"):
        write_case(tmp_path / "in", case_id, [synthetic_image((40, 36, 8))], oblique())
    output = tmp_path / "out"
    result = run_masksam(
        "predict", "-i", str(tmp_path / "in" / "second_0000.nii.gz"), "-o", str(output), "-m", str(model_dir),
        "-f", "0", "--no-tta", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in output.iterdir()) == ["second.nii.gz"]
    assert nib.load(str(output / "second.nii.gz")).shape == (40, 36, 8)


def test_one_file_next_to_its_output_is_refused(tmp_path: Path, model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((40, 36, 8))], oblique())
    result = invoke("-i", tmp_path / "in" / "case_0000.nii.gz", "-o", tmp_path / "in", "-m", model_dir, "-f", "0")
    assert isinstance(result.exception, ConfigError)
    assert "the output folder is the input folder" in str(result.exception)
    result = invoke("-i", tmp_path / "in" / "case_0000.nii.gz", "-o", tmp_path / "case.nii.gz", "-m", model_dir)
    assert isinstance(result.exception, ConfigError) and "-o names a folder" in str(result.exception)


def test_a_2d_image_gets_a_2d_label_map(tmp_path: Path, model_dir: Path) -> None:
    image = synthetic_image((40, 36, 1))[..., 0]  # (x, y)
    affine = np.diag([1.5, 1.5, 1.0, 1.0])
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "in" / "slice_0000.nii.gz"))
    args = ["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "-f", "0", "--no-tta"]
    result = invoke(*args, "--save-probabilities")
    assert result.exit_code == 0, result.output
    labels = nib.load(str(tmp_path / "out" / "slice.nii.gz"))
    assert labels.shape == (40, 36) and labels.header["dim"][0] == 2
    np.testing.assert_array_equal(labels.affine, nib.load(str(tmp_path / "in" / "slice_0000.nii.gz")).affine)
    with np.load(tmp_path / "out" / "slice.npz") as stored:
        assert stored["probabilities"].shape == (3, 1, 36, 40)  # nnU-Net's (C, 1, y, x) of a 2D image


def test_a_label_map_given_as_image_gets_a_warning(tmp_path: Path, model_dir: Path) -> None:
    image = synthetic_image((40, 36, 8))
    labels = np.zeros(image.shape, np.uint8)
    labels[image > 130], labels[image > 200] = 1, 2
    write_case(tmp_path / "in", "image", [image], oblique())
    write_case(tmp_path / "in", "labels", [labels], oblique())  # labelsTr/labels.nii.gz renamed labels_0000
    result = invoke("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "-f", "0", "--no-tta")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "like a label map" in line]
    assert warnings == [
        f"masksam: warning: case labels, file {tmp_path / 'in' / 'labels_0000.nii.gz'}: holds only the integer "
        "values 0, 1, 2, like a label map, not an image; predict the images (imagesTs), not the labels (labelsTr)"
    ]
    assert "wrote 2 of 2 case(s)" in result.stdout


def run_in_terminal(*args: str, columns: int = 120) -> tuple[int, str]:
    """The installed script with stderr on a pseudo-terminal of ``columns`` (tqdm draws its bars only on one).

    Returns:
        (exit code, everything written to the terminal).
    """
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": str(columns)}
    process = subprocess.Popen([MASKSAM, *args], stdout=subprocess.DEVNULL, stderr=follower, env=environment)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the script ended and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow  # the console script end to end: about 6 s
@needs_script
def test_a_terminal_shows_the_windows_of_the_case_in_progress(tmp_path: Path, model_dir: Path) -> None:
    write_case(tmp_path / "in", "case", [synthetic_image((120, 100, 8))], oblique())
    code, terminal = run_in_terminal(
        "predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir), "-f", "0",
        "--no-tta", "--device", "cpu", "--threads", "1",
    )  # fmt: skip
    assert code == 0, terminal
    windows = re.findall(r"windows:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", terminal)
    assert windows, terminal
    counts = [(int(done), int(total)) for done, total in windows]
    (total,) = {total for _, total in counts}  # one case: one count of windows, on a bar under the cases' bar
    assert total > 1 and max(done for done, _ in counts) > 0  # it moved within the case (tqdm draws some steps)
    assert "predicting:" in terminal
