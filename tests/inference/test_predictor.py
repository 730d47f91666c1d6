"""Predictor: exact file geometry for oblique/flipped/permuted inputs, mirror consistency, folds, probabilities."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from inference.builders import (
    TINY_PATCH,
    make_plans,
    replace_plans,
    save_tiny_checkpoint,
    stub_model,
    synthetic_image,
    tiny_config,
    write_case,
)

from masksam.data.io import Geometry
from masksam.data.preprocessing import preprocess_arrays, restore_original_geometry
from masksam.errors import CheckpointError, DatasetError
from masksam.inference.predictor import Predictor, label_like_values, select_checkpoints
from masksam.inference.semantic import semantic_scores
from masksam.model.masksam import build_masksam
from masksam.model_files import TrainedModel
from masksam.training.checkpoint import load_trained_model

LABEL_FIELDS = {"datatype", "bitpix", "scl_slope", "scl_inter", "cal_min", "cal_max"}


def rotation(degrees: float, axis: int) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def affine_of(spacing, *, flips=(), order=(0, 1, 2), angles=(20.0, -35.0)) -> np.ndarray:
    """Oblique voxel-to-world matrix; ``flips`` negate axes, ``order`` permutes which world axis each file axis runs."""
    columns = rotation(angles[0], 2) @ rotation(angles[1], 0) @ np.diag(spacing)
    columns = columns[:, list(order)]
    for axis in flips:
        columns[:, axis] *= -1
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = [-80.5, 12.25, 40.0]
    return affine


def header_differences(a, b) -> list[str]:
    def same(x, y) -> bool:
        return bool(np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.floating)))

    return [key for key in a.keys() if key not in LABEL_FIELDS and not same(a[key], b[key])]


# ---------------------------------------------------------------------------------------------- checkpoints


def make_model_dir(root: Path, layout: dict[str, list[str]]) -> Path:
    for fold, names in layout.items():
        (root / fold).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / fold / f"checkpoint_{name}.pt").write_bytes(b"x")
    return root


@pytest.mark.parametrize(
    ("layout", "folds", "checkpoint", "unfinished", "expected", "warned"),
    [
        pytest.param(
            {"fold_0": ["final"], "fold_1": ["final"]}, None, None, False, ["0/final", "1/final"], 0, id="finals"
        ),
        pytest.param(
            {"fold_0": ["final"], "fold_1": ["final"], "fold_all": ["final"]}, None, None, False,
            ["0/final", "1/final"], 0, id="cross-validation-folds-without-fold-all",
        ),
        pytest.param(
            {"fold_0": ["final"], "fold_1": ["latest"]}, None, None, True, ["0/final", "1/latest"], 1,
            id="allow-unfinished",
        ),
        pytest.param(
            {"fold_0": ["final"], "fold_1": []}, None, None, True, ["0/final"], 1, id="allow-unfinished-empty-fold"
        ),
        pytest.param(
            {"fold_0": ["final", "best"], "fold_1": ["best"]}, None, "best", False, ["0/best", "1/best"], 0, id="best"
        ),
        pytest.param({"fold_0": ["final"], "fold_1": ["final"]}, [1], None, False, ["1/final"], 0, id="one-fold"),
        pytest.param({"fold_all": ["final"], "fold_0": ["final"]}, [-1], None, False, ["all/final"], 0, id="fold-all"),
        pytest.param({"fold_all": ["latest"]}, [-1], None, True, ["all/latest"], 1, id="fold-all-unfinished"),
        pytest.param(
            {f"fold_{f}": ["final"] for f in (0, 2, 10)}, None, None, False, ["0/final", "2/final", "10/final"], 0,
            id="numeric-order",
        ),
    ],
)  # fmt: skip
def test_select_checkpoints(tmp_path: Path, layout, folds, checkpoint, unfinished, expected, warned) -> None:
    model_dir = make_model_dir(tmp_path / "model", layout)
    paths, warnings = select_checkpoints(model_dir, folds=folds, checkpoint=checkpoint, allow_unfinished=unfinished)
    assert [f"{p.parent.name.removeprefix('fold_')}/{p.stem.removeprefix('checkpoint_')}" for p in paths] == expected
    assert len(warnings) == warned and all("\n" not in w for w in warnings)


@pytest.mark.parametrize(
    ("layout", "folds", "checkpoint", "message"),
    [
        pytest.param(None, None, None, "model folder not found", id="no-folder"),
        pytest.param({}, None, None, "no fold_\\*/checkpoint_final.pt or checkpoint_latest.pt", id="empty"),
        pytest.param({"fold_0": ["best"]}, None, None, "training unfinished", id="only-best"),
        pytest.param({"fold_0": ["latest"]}, None, "final", "checkpoint_final.pt", id="named-missing"),
        pytest.param({"fold_0": ["final"]}, [3], None, "fold_3/checkpoint_final.pt: checkpoint not found", id="fold"),
        pytest.param(
            {"fold_0": ["final"], "fold_1": ["latest"], "fold_2": ["final"]}, None, None,
            "fold_1: training unfinished, no checkpoint_final.pt \\(has only checkpoint_latest.pt\\); finish it with "
            "'masksam train ... --fold 1 --continue', predict with the finished folds only \\(-f 0,2\\), or pass "
            "--allow-unfinished",
            id="unfinished-fold",
        ),
        pytest.param(
            {"fold_0": ["final"], "fold_1": []}, None, None, "fold_1: training unfinished.*has no checkpoint",
            id="fold-without-checkpoint",
        ),
        pytest.param({"fold_all": ["final"]}, None, None, "only fold_all .* -f all", id="only-fold-all"),
    ],
)  # fmt: skip
def test_select_checkpoints_errors(tmp_path: Path, layout, folds, checkpoint, message) -> None:
    model_dir = tmp_path / "model"
    if layout is not None:
        model_dir.mkdir()
        make_model_dir(model_dir, layout)
    with pytest.raises(CheckpointError, match=message) as error:
        select_checkpoints(model_dir, folds=folds, checkpoint=checkpoint)
    assert "\n" not in str(error.value)


def test_a_checkpoint_file_given_as_model_folder_gets_the_right_options(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model", {"fold_2": ["best"]})
    with pytest.raises(CheckpointError) as error:
        select_checkpoints(model_dir / "fold_2" / "checkpoint_best.pt")
    assert str(error.value) == (
        f"{model_dir / 'fold_2' / 'checkpoint_best.pt'}: is a checkpoint file; -m takes the training output folder: "
        f"-m {model_dir} -f 2 -c best"
    )


@pytest.mark.parametrize("fold", ["0", "all"])
def test_a_fold_folder_given_as_model_folder_gets_the_right_options(tmp_path: Path, fold: str) -> None:
    model_dir = make_model_dir(tmp_path / "model", {f"fold_{fold}": ["final"]})
    with pytest.raises(CheckpointError) as error:
        select_checkpoints(model_dir / f"fold_{fold}")
    assert str(error.value) == (
        f"{model_dir / f'fold_{fold}'}: is one fold's folder; -m takes the training output folder above it: "
        f"-m {model_dir} -f {fold}"
    )


# ------------------------------------------------------------------------------------------------- geometry

GEOMETRIES = [
    pytest.param((40, 36, 8), affine_of((1.5, 1.5, 6.0)), id="oblique-anisotropic"),
    pytest.param((40, 36, 8), affine_of((1.5, 1.5, 6.0), flips=(0, 2)), id="flipped-axes"),
    pytest.param((8, 36, 40), affine_of((6.0, 1.5, 1.5), order=(2, 1, 0), flips=(1,)), id="permuted-axes"),
    pytest.param((30, 24, 1), np.diag([-0.8, -0.8, 5.0, 1.0]), id="single-slice-LPS"),
]


@pytest.mark.parametrize(("shape", "affine"), GEOMETRIES)
def test_trained_tiny_model_keeps_the_file_geometry(tmp_path: Path, shape, affine) -> None:
    plans = make_plans()
    path = save_tiny_checkpoint(tmp_path / "model", plans)
    predictor = Predictor.from_checkpoints([path], tta=False, windows_per_batch=4)
    files = write_case(tmp_path / "in", "case", [synthetic_image(shape)], affine)
    reference = nib.load(str(files[0]))
    reference.header["descrip"] = b"kept"  # a header field that must survive
    nib.save(reference, str(files[0]))
    written = predictor.predict_case(files, tmp_path / "out" / "case.nii.gz")
    result = nib.load(str(written[0]))
    reference = nib.load(str(files[0]))
    assert result.shape == reference.shape == shape
    np.testing.assert_array_equal(result.affine, reference.affine)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(reference.affine)
    assert header_differences(reference.header, result.header) == []
    labels = np.asanyarray(result.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}


MIRRORS = [
    pytest.param(lambda a: a[::-1], (0,), (0, 1, 2), id="flip-x"),
    pytest.param(lambda a: a[:, ::-1], (1,), (0, 1, 2), id="flip-y"),
    pytest.param(lambda a: a[:, :, ::-1], (2,), (0, 1, 2), id="flip-z-slices"),
    pytest.param(lambda a: a[::-1, ::-1, ::-1], (0, 1, 2), (0, 1, 2), id="flip-all"),
    pytest.param(lambda a: a.transpose(1, 0, 2), (), (1, 0, 2), id="swap-in-plane"),
    pytest.param(lambda a: a.transpose(2, 1, 0)[::-1], (0,), (2, 1, 0), id="permute-and-flip"),
]


@pytest.mark.parametrize(("change", "flips", "order"), MIRRORS)
def test_mirrored_volume_gives_the_mirrored_prediction(change, flips, order) -> None:
    """With isotropic 1 mm voxels nothing is resampled; the stub is pointwise, so labels must follow the voxels."""
    plans = make_plans(target_spacing=(1.0, 1.0, 1.0), anisotropic=False)
    predictor = Predictor([stub_model(plans)], tta=True, windows_per_batch=8)
    image = synthetic_image((30, 26, 7), seed=3)
    labels = predictor.predict_array(image[None], affine_of((1.0, 1.0, 1.0)))
    assert len(np.unique(labels)) == 3  # every class occurs, so the comparison means something
    changed = np.ascontiguousarray(change(image))
    changed_labels = predictor.predict_array(changed[None], affine_of((1.0, 1.0, 1.0), flips=flips, order=order))
    np.testing.assert_array_equal(changed_labels, change(labels))


@pytest.mark.parametrize(
    ("target_spacing", "anisotropic"),
    [pytest.param((2.0, 1.0, 1.0), False, id="no-resampling"), pytest.param((3.0, 0.7, 1.3), True, id="resampled")],
)
def test_pointwise_model_equals_direct_evaluation(target_spacing, anisotropic) -> None:
    """Windows, padding and blending must not change a pointwise model's output: compare with one whole-volume call."""
    plans = make_plans(target_spacing=target_spacing, anisotropic=anisotropic)
    stub = stub_model(plans)
    image = synthetic_image((50, 37, 9), seed=5)[None]
    affine = affine_of((1.0, 1.0, 2.0))
    labels = Predictor([stub], tta=False, windows_per_batch=3).predict_array(image, affine)
    preprocessed, _, properties = preprocess_arrays(image, None, Geometry.from_affine(image.shape[1:], affine), plans)
    with torch.inference_mode():
        output = stub.model(torch.from_numpy(preprocessed)[None])  # the whole volume as one patch
    scores = semantic_scores(output.class_logits, output.mask_logits)  # (T, K, H, W)
    class_ids = scores.argmax(dim=1).numpy().astype(np.uint8)  # (T, H, W)
    expected, _ = restore_original_geometry(class_ids, properties, is_label=True)
    assert labels.shape == expected.shape == image.shape[1:]
    assert np.mean(labels == expected) > 0.9995  # float32 rounding of the blend may flip an exact tie


def test_tta_does_not_change_a_mirror_equivariant_model() -> None:
    plans = make_plans()
    image = synthetic_image((40, 36, 8))[None]
    affine = affine_of((1.5, 1.5, 6.0))
    plain = Predictor([stub_model(plans)], tta=False).predict(image, affine, probabilities=True)
    mirrored = Predictor([stub_model(plans)], tta=True, mirror_depth=True).predict(image, affine, probabilities=True)
    np.testing.assert_allclose(
        mirrored.probabilities().astype(np.float32), plain.probabilities().astype(np.float32), atol=2e-3
    )
    assert np.mean(mirrored.labels == plain.labels) > 0.999  # float16 ties aside


# ---------------------------------------------------------------------------------------- folds, scores


def test_fold_ensemble_averages_class_scores() -> None:
    plans = make_plans()
    first, second = stub_model(plans, shift=0.0), stub_model(plans, shift=0.7, certainty=2.0)
    image = np.random.default_rng(0).normal(size=(1, 5, 70, 40)).astype(np.float32)
    _, scores_first = Predictor([first], tta=False).predict_preprocessed(image, keep_scores=True)
    _, scores_second = Predictor([second], tta=False).predict_preprocessed(image, keep_scores=True)
    ids, scores_both = Predictor([first, second], tta=False).predict_preprocessed(image, keep_scores=True)
    expected = (scores_first.astype(np.float32) + scores_second.astype(np.float32)) / 2
    np.testing.assert_allclose(scores_both.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert ids.shape == (5, 70, 40) and ids.dtype == np.uint8
    assert np.mean(ids == scores_both.astype(np.float32).argmax(axis=0)) > 0.999  # float16 ties aside


def test_probabilities_on_the_file_grid() -> None:
    plans = make_plans(target_spacing=(1.0, 1.0, 1.0), anisotropic=False)
    image = synthetic_image((30, 26, 7), border=(4, 2))
    prediction = Predictor([stub_model(plans)], tta=False).predict(
        image[None], affine_of((1.0, 1.0, 1.0)), probabilities=True
    )
    scores = prediction.probabilities()
    assert scores.shape == (3, 30, 26, 7) and scores.dtype == np.float16
    inside = image != 0
    agree = scores.astype(np.float32).argmax(axis=0) == prediction.labels
    assert agree[inside].mean() > 0.999  # same scores, up to float16 ties
    np.testing.assert_array_equal(scores[:, :4][0], 1)  # outside the crop box: background
    np.testing.assert_array_equal(scores[:, :4][1:], 0)
    np.testing.assert_array_equal(prediction.labels[:4], 0)


@pytest.mark.parametrize("anisotropic", [False, True], ids=["isotropic", "anisotropic"])
def test_probabilities_sum_to_one_per_voxel(anisotropic: bool) -> None:
    spacing = (6.0, 1.5, 1.5) if anisotropic else (1.0, 1.0, 1.0)
    plans = make_plans(target_spacing=spacing, anisotropic=anisotropic)
    image = synthetic_image((30, 26, 7), border=(4, 2))
    prediction = Predictor([stub_model(plans, certainty=2.0)], tta=False).predict(
        image[None], affine_of((1.2, 1.3, 5.0)), probabilities=True
    )
    raw = prediction.scores.astype(np.float32).sum(axis=0)
    assert raw.max() > 1.1 or raw.min() < 0.9  # the semantic scores themselves do not sum to 1
    probabilities = prediction.probabilities().astype(np.float32)  # resampled to the file grid
    assert probabilities.min() >= 0
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=5e-3)  # float16 rounding of K values


def test_folds_of_different_plans_are_refused(tmp_path: Path) -> None:
    plans = make_plans()
    other = replace_plans(plans, target_spacing=(5.0, 1.5, 1.5))
    with pytest.raises(CheckpointError, match="target_spacing"):
        Predictor([stub_model(plans), stub_model(other)])


def test_loaded_folds_predict_like_the_models_they_saved(tmp_path: Path) -> None:
    plans = make_plans()
    paths = [save_tiny_checkpoint(tmp_path / "model", plans, fold=f, seed=f) for f in (0, 1)]
    image = np.random.default_rng(0).normal(size=(1, 2, 64, 64)).astype(np.float32)
    predictor = Predictor.from_checkpoints(paths, tta=False)
    with torch.inference_mode():
        ensemble = predictor.score_patches(torch.from_numpy(image)[None])
        singles = [
            Predictor([load_trained_model(p)], tta=False).score_patches(torch.from_numpy(image)[None]) for p in paths
        ]
    torch.testing.assert_close(ensemble, (singles[0] + singles[1]) / 2)
    assert not torch.allclose(singles[0], singles[1])  # the folds differ, so the average is a real test


@pytest.mark.parametrize(
    ("prompt_mode", "training_config", "asked", "expected"),
    [
        pytest.param("generated", {"denoising_groups": 1}, None, 1, id="trained-with-denoising"),
        pytest.param("generated", {"denoising_groups": 0}, None, 0, id="trained-without-denoising"),
        pytest.param("generated", None, None, 0, id="training-settings-unknown"),
        pytest.param("ground_truth", {"denoising_groups": 1}, None, 0, id="ground-truth-prompts"),
        pytest.param("generated", {"denoising_groups": 1}, 0, 0, id="asked-for-none"),
        pytest.param("generated", {"denoising_groups": 0}, 2, 2, id="asked-for-two"),
    ],
)
def test_refinement_passes_follow_the_training_unless_asked(prompt_mode, training_config, asked, expected) -> None:
    """A model whose decoder learnt clean segment prompts (denoising queries) is refined once by default, and the
    forward pass of every window gets the passes."""
    plans = make_plans()
    model = build_masksam(tiny_config(plans, prompt_mode=prompt_mode)).eval()
    payload = {} if training_config is None else {"training_config": training_config}
    predictor = Predictor([TrainedModel(model, plans, payload, Path("m"))], tta=False, refinement_passes=asked)
    assert predictor.refinement_passes == [expected]
    if prompt_mode == "ground_truth":
        return
    passes_seen = []
    forward = model.forward
    model.forward = lambda *args, **kwargs: (
        passes_seen.append(kwargs.get("refinement_passes", 0)) or forward(*args, **kwargs)
    )
    with torch.inference_mode():
        predictor.score_patches(torch.randn(1, 1, *TINY_PATCH))
    assert passes_seen == [expected]


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("image", "message"),
    [
        pytest.param(np.zeros((2, 10, 10, 4), np.float32), "C = 1 channel", id="two-channels"),
        pytest.param(np.zeros((10, 10, 4), np.float32), "C = 1 channel", id="no-channel-axis"),
    ],
)
def test_wrong_input_is_a_dataset_error(image, message) -> None:
    predictor = Predictor([stub_model(make_plans())], tta=False)
    with pytest.raises(DatasetError, match=message):
        predictor.predict_array(image, np.eye(4))


def test_case_errors(tmp_path: Path) -> None:
    plans = make_plans(num_channels=2)
    predictor = Predictor([stub_model(plans)], tta=False)
    good = synthetic_image((20, 18, 6))
    files = write_case(tmp_path, "shapes", [good, good[:, :-1]], np.eye(4))
    with pytest.raises(DatasetError, match="shapes_0001.nii.gz: shape .* differs"):
        predictor.predict_case(files, tmp_path / "out" / "shapes.nii.gz")
    with pytest.raises(DatasetError, match="1 channel file\\(s\\) given but the model needs 2"):
        predictor.predict_case(files[:1], tmp_path / "out" / "shapes.nii.gz")
    broken = tmp_path / "broken_0000.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    with pytest.raises(DatasetError, match="broken_0000.nii.gz: unreadable NIfTI"):
        predictor.predict_case([broken, files[1]], tmp_path / "out" / "broken.nii.gz")
    holes = good.copy()
    holes[0, 0, :2], holes[1, 1, 0] = np.nan, np.inf
    files = write_case(tmp_path, "holes", [good, holes], np.eye(4))
    with pytest.raises(DatasetError) as caught:
        predictor.predict_case(files, tmp_path / "out" / "holes.nii.gz")
    assert str(caught.value) == (
        f"case holes, file {files[1]}: 2 NaN and 1 Inf intensities; fix or re-export the image"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_all_zero_image_is_background(tta: bool) -> None:
    """A blank image holds nothing to segment: every voxel is background, scores included, whatever the model
    makes of a constant input. The stub labels intensity 0 as class 1 (as a briefly trained model may: the
    tiny MaskSAM labels most of a blank image foreground after 5 steps), so the model alone would not pass."""
    predictor = Predictor([stub_model(make_plans())], tta=tta)
    blank = np.zeros((1, 12, 10, 3), np.float32)
    preprocessed, _, _ = preprocess_arrays(
        blank, None, Geometry.from_affine(blank.shape[1:], np.eye(4)), predictor.plans
    )
    model_says, _ = predictor.predict_preprocessed(preprocessed)
    assert model_says.all()  # what the model makes of the blank volume: foreground everywhere
    prediction = predictor.predict(blank, np.eye(4), probabilities=True)
    assert prediction.labels.shape == (12, 10, 3) and prediction.labels.dtype == np.uint8
    assert not prediction.labels.any()
    probabilities = prediction.probabilities()
    np.testing.assert_array_equal(probabilities[0], 1)
    np.testing.assert_array_equal(probabilities[1:], 0)


def test_a_subclass_may_override_score_patches_with_the_patches_only() -> None:
    """Other predictors (baselines) replace ``score_patches(patches)``; windows, TTA and geometry stay the same."""

    class ClassOne(Predictor):
        def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
            batch, _, slices, height, width = patches.shape
            scores = torch.zeros(batch, self.num_classes, slices, height, width)
            scores[:, 1] = 1
            return scores

    image = synthetic_image((30, 26, 7), border=(4, 2))
    labels = ClassOne([stub_model(make_plans())], tta=True).predict_array(image[None], np.eye(4))
    np.testing.assert_array_equal(labels[4:-2, 4:], 1)  # the non-zero crop box
    np.testing.assert_array_equal(labels[:4], 0)
    np.testing.assert_array_equal(labels[:, :4], 0)


# ---------------------------------------------------------------------------------------- progress, inputs


@pytest.mark.parametrize("windows_per_batch", [1, 3])
def test_progress_inside_a_case_counts_every_window(windows_per_batch: int) -> None:
    plans = make_plans()
    image = synthetic_image((90, 80, 9))[None]
    predictor = Predictor([stub_model(plans)], tta=False, windows_per_batch=windows_per_batch)
    calls = []
    predictor.predict(image, affine_of((1.5, 1.5, 6.0)), progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert total > 4 and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})  # rising, one call per batch
    assert len(calls) == -(-total // windows_per_batch) and {t for _, t in calls} == {total}


def test_window_progress_restarts_the_bar_for_each_case() -> None:
    import io

    from tqdm import tqdm

    from masksam.cli.predict_command import window_progress

    bar = tqdm(file=io.StringIO(), disable=False)
    show = window_progress(bar)
    show(2, 6)
    show(6, 6)
    assert (bar.n, bar.total) == (6, 6)
    show(1, 4)  # the next case
    assert (bar.n, bar.total) == (1, 4)


@pytest.mark.parametrize(
    ("array", "values"),
    [
        pytest.param(np.array([[0, 1], [2, 3]], np.uint8)[..., None].repeat(4, axis=2), [0, 1, 2, 3], id="labels"),
        pytest.param(np.array([0.0, 1.0, 1.0]).reshape(1, 1, 3), [0, 1], id="float-labels"),
        pytest.param(synthetic_image((20, 20, 4)), None, id="image"),
        pytest.param(np.arange(40, dtype=np.int16).reshape(2, 4, 5), None, id="many-integers"),
        pytest.param(np.array([-1, 0, 1], np.int16).reshape(1, 1, 3), None, id="negative"),
        pytest.param(np.array([0.5, 1.5]).reshape(1, 1, 2), None, id="fractions"),
    ],
)
def test_label_like_values(array: np.ndarray, values) -> None:
    assert label_like_values(array) == values


@pytest.mark.parametrize(
    ("amp", "expected"),
    [("auto", None), ("off", None), ("bf16", torch.bfloat16)],
    ids=["auto-is-fp32-on-cpu", "off", "bf16"],
)
def test_forward_passes_autocast_as_amp_says(amp: str, expected) -> None:
    """As training's --amp (the CUDA choice from the GPU's compute capability: tests/test_precision.py)."""
    trained = stub_model(make_plans())
    seen = []
    trained.model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
    )
    predictor = Predictor([trained], tta=False, amp=amp)
    scores = predictor.score_patches(torch.zeros(1, 1, 2, 64, 64))
    assert seen == [expected] and scores.dtype == torch.float32
