"""``masksam show``: overlay and prompt PNGs from files, automatic axis and slices, one-line errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import typer
from inference.builders import planned_plans, save_tiny_checkpoint
from matplotlib.image import imread
from typer.testing import CliRunner

from masksam.cli.show_command import parse_axis, parse_slices, prompts_path, show
from masksam.errors import CheckpointError, ConfigError, DatasetError, MaskSamError

app = typer.Typer(pretty_exceptions_enable=False)
app.command()(show)
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """A planned synthetic nnU-Net dataset (40×36×8 voxels of 1.5×1.5×6 mm) and an unfinished training folder."""
    root = tmp_path_factory.mktemp("show")
    plans = planned_plans(root / "dataset")
    save_tiny_checkpoint(root / "model", plans, fold=0, name="latest")
    folder = root / "dataset" / "Dataset001_Synthetic"
    image, label = folder / "imagesTr" / "case_000_0000.nii.gz", folder / "labelsTr" / "case_000.nii.gz"
    return {"root": root, "image": image, "label": label, "model": root / "model"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_like(reference: Path, path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    source = nib.load(str(reference))
    nib.save(nib.Nifti1Image(array, source.affine if affine is None else affine), str(path))
    return path


def test_overlays_only_with_automatic_axis_and_slices(dataset, tmp_path):
    label = np.asarray(nib.load(str(dataset["label"])).dataobj)
    prediction = write_like(dataset["label"], tmp_path / "pred.nii.gz", np.roll(label, 2, axis=0))
    result = invoke(dataset["image"], "-l", dataset["label"], "-p", prediction, "-o", tmp_path / "case.png")
    assert result.exit_code == 0, result.output
    foreground = np.count_nonzero(label, axis=(0, 1))  # per slice along z, the 6 mm (coarsest) axis
    expected = sorted(np.argsort(-foreground, kind="stable")[:3].tolist())
    assert f"wrote {tmp_path / 'case.png'} (slices {', '.join(map(str, expected))} along axis 2)" in result.stdout
    # 3 rows × 3 columns of 300 px; panel height 300 · (40 · 1.5) / (36 · 1.5) = 333⅓ px, + 50 px legend band.
    assert imread(str(tmp_path / "case.png")).shape == (1050, 900, 4)
    assert not (tmp_path / "case_prompts.png").exists()


@pytest.mark.slow
def test_model_adds_the_prompt_picture_and_uses_its_slice_axis(dataset, tmp_path):
    output = tmp_path / "out" / "case.png"
    result = invoke(dataset["image"], "-l", dataset["label"], "-m", dataset["model"], "--slices", "2,5,6", "-o", output)
    assert result.exit_code == 0, result.output
    assert "checkpoint_final.pt not found" in result.stderr  # fell back to checkpoint_latest.pt
    assert "(slices 2, 5, 6 along axis 2)" in result.stdout
    assert f"wrote {output.with_name('case_prompts.png')}" in result.stdout
    assert imread(str(output)).shape == (1050, 600, 4)  # image | ground truth
    assert imread(str(output.with_name("case_prompts.png"))).shape[1] == 900  # boxes | semantic map | reference


def test_a_model_with_only_fold_all_draws_it(dataset, tmp_path):
    model = tmp_path / "model"
    (model / "fold_all").mkdir(parents=True)
    (model / "fold_all" / "checkpoint_final.pt").write_bytes(
        (dataset["model"] / "fold_0" / "checkpoint_latest.pt").read_bytes()
    )
    output = tmp_path / "case.png"
    result = invoke(dataset["image"], "-m", model, "--slices", "2", "-o", output)
    assert result.exit_code == 0, result.output
    assert f"wrote {output.with_name('case_prompts.png')}" in result.stdout


def write_shifted_affine(dataset, tmp_path) -> Path:
    affine = nib.load(str(dataset["label"])).affine.copy()
    affine[0, 3] += 3.0
    label = np.asarray(nib.load(str(dataset["label"])).dataobj)
    return write_like(dataset["label"], tmp_path / "moved.nii.gz", label, affine)


CASES = {
    "missing-image": (lambda d, t: [t / "nope_0000.nii.gz", "-o", t / "x.png"], DatasetError, "file not found"),
    "missing-label": (
        lambda d, t: [d["image"], "-l", t / "nope.nii.gz", "-o", t / "x.png"],
        DatasetError,
        "nope.nii.gz: file not found",
    ),
    "label-shape": (
        lambda d, t: [
            d["image"],
            "-l",
            write_like(d["label"], t / "small.nii.gz", np.zeros((40, 36, 7), np.uint8)),
            "-o",
            t / "x.png",
        ],
        DatasetError,
        "label has shape (40, 36, 7) but image",
    ),
    "prediction-affine": (
        lambda d, t: [d["image"], "-p", write_shifted_affine(d, t), "-o", t / "x.png"],
        DatasetError,
        "prediction and image",
    ),
    "non-integer-label": (
        lambda d, t: [
            d["image"],
            "-l",
            write_like(d["label"], t / "f.nii.gz", np.full((40, 36, 8), 0.5, np.float32)),
            "-o",
            t / "x.png",
        ],
        DatasetError,
        "values are not all integers",
    ),
    "slice-out-of-range": (
        lambda d, t: [d["image"], "--slices", "1,8", "-o", t / "x.png"],
        ConfigError,
        "slice(s) 8 outside 0..7 along axis 2",
    ),
    "bad-slices": (lambda d, t: [d["image"], "--slices", "a,b", "-o", t / "x.png"], ConfigError, "--slices 'a,b'"),
    "not-png": (lambda d, t: [d["image"], "-o", t / "x.nii.gz"], ConfigError, "must be a .png file"),
    "axis-differs-from-model": (
        lambda d, t: [d["image"], "-m", d["model"], "--axis", "0", "-o", t / "x.png"],
        ConfigError,
        "differs from the model's slice axis 2",
    ),
    "two-folds": (
        lambda d, t: [d["image"], "-m", d["model"], "--fold", "0,1", "-o", t / "x.png"],
        ConfigError,
        "pass one fold",
    ),
    "missing-checkpoint": (
        lambda d, t: [d["image"], "-m", d["model"], "-c", "best", "-o", t / "x.png"],
        CheckpointError,
        "checkpoint_best.pt",
    ),
    "label-beyond-model-classes": (
        lambda d, t: [
            d["image"],
            "-l",
            write_like(d["label"], t / "k.nii.gz", np.full((40, 36, 8), 5, np.uint8)),
            "-m",
            d["model"],
            "-o",
            t / "x.png",
        ],
        DatasetError,
        "label value 5 is beyond the model's 3 classes",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_inputs_give_one_line_errors_and_no_picture(dataset, tmp_path, name):
    arguments, error, fragment = CASES[name]
    result = invoke(*arguments(dataset, tmp_path))
    assert result.exit_code == 1
    assert isinstance(result.exception, error), repr(result.exception)
    message = str(result.exception)
    assert fragment in message and "\n" not in message, message
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param(" ", None, id="blank"),
        pytest.param("3,5", [3, 5], id="commas"),
        pytest.param("3 5", [3, 5], id="spaces"),
        pytest.param("7", [7], id="one"),
    ],
)
def test_parse_slices(text, expected):
    assert parse_slices(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [pytest.param("auto", None, id="auto"), pytest.param("1", 1, id="number")]
)
def test_parse_axis(text, expected):
    assert parse_axis(text) == expected


def test_parse_axis_rejects_others():
    with pytest.raises(MaskSamError, match="choose auto, 0, 1 or 2"):
        parse_axis("z")


def test_prompts_path():
    assert prompts_path(Path("out/case.png")) == Path("out/case_prompts.png")
