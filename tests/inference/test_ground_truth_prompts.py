"""Predicting with a ground-truth prompt mode model: labels preprocessed like training, boxes per window as the
trainer builds them, mirrored with the image; generated-mode models unaffected; one-line refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from inference.builders import TINY_PATCH, make_plans, stub_model, synthetic_image, tiny_config, write_case

from masksam.data.io import Geometry
from masksam.data.preprocessing import preprocess_arrays
from masksam.errors import ConfigError, DatasetError
from masksam.inference.predictor import Predictor, preprocess_prompt_labels
from masksam.inference.semantic import prompted_semantic_scores, semantic_scores
from masksam.inference.sliding_window import pad_volume, window_grid
from masksam.inference.tta import HEIGHT_AXIS, WIDTH_AXIS, mirror_combinations
from masksam.model.masksam import build_masksam
from masksam.training.checkpoint import TrainedModel
from masksam.training.trainer import Trainer

AFFINE = np.diag([1.5, 1.5, 6.0, 1.0])


def trained(plans, *, prompt_mode: str = "ground_truth", seed: int = 0, **overrides) -> TrainedModel:
    torch.manual_seed(seed)
    model = build_masksam(tiny_config(plans, prompt_mode=prompt_mode, **overrides)).eval()
    return TrainedModel(model=model, plans=plans, payload={}, path=Path(f"{prompt_mode}.pt"))


def reference_labels(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) uint8 labels 0..2 of :func:`synthetic_image` (inside its non-zero region)."""
    labels = np.zeros(image.shape, np.uint8)
    labels[image > 130] = 1
    labels[image > 200] = 2
    return labels


def blocks(shape: tuple[int, int, int]) -> np.ndarray:
    """(T, H, W) class ids: rectangles of classes 1 and 2 that move from slice to slice."""
    labels = np.zeros(shape, np.uint8)
    for t in range(shape[0]):
        labels[t, 5 + 3 * t : 30 + 2 * t, 4 + t : 20] = 1
        labels[t, 40 - t : 60, 10 + 2 * t : 35 - t] = 2
    return labels


def trainer_targets(model: torch.nn.Module, labels: torch.Tensor):
    """The trainer's own target code (``Trainer.targets``) for a model's config."""
    return Trainer.targets(SimpleNamespace(model_config=model.config), labels)


def record_calls(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Spies on a model's forward: (patches, boxes) of every call."""
    calls = []

    def hook(_, args):
        calls.append((args[0].clone(), args[1].clone() if len(args) > 1 else None))

    model.register_forward_pre_hook(hook)
    return calls


# ---------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    ("target_spacing", "anisotropic", "shape"),
    [
        pytest.param((6.0, 1.5, 1.5), True, (40, 36, 8), id="no-resampling"),
        pytest.param((4.0, 1.1, 1.9), True, (40, 36, 8), id="resampled-anisotropic"),
        pytest.param((2.0, 2.0, 2.0), False, (30, 28, 9), id="resampled-isotropic"),
    ],
)
def test_labels_are_preprocessed_as_training_preprocesses_them(target_spacing, anisotropic, shape) -> None:
    plans = make_plans(target_spacing=target_spacing, anisotropic=anisotropic)
    image = synthetic_image(shape)
    labels = reference_labels(image)  # inside the image's non-zero box, so training crops the same box
    geometry = Geometry.from_affine(shape, AFFINE)
    _, expected, training_properties = preprocess_arrays(image[None], labels, geometry, plans)
    _, _, properties = preprocess_arrays(image[None], None, geometry, plans)
    assert properties["crop_box"] == training_properties["crop_box"]
    actual = preprocess_prompt_labels(labels, properties, label_values=np.arange(3))
    np.testing.assert_array_equal(actual, expected)
    assert set(np.unique(actual)) == {0, 1, 2}


def test_label_values_map_to_class_ids() -> None:
    """Class id = position among the plans' label values; float files are rounded."""
    properties = {
        "crop_box": [[0, 1], [0, 2], [0, 3]],  # (T, H, W) order
        "transpose": [2, 0, 1],
        "shape_after_resampling": [1, 2, 3],
        "separate_through_plane": False,
    }
    labels = np.array([[[0.0], [4.0], [7.0]], [[7.0], [0.0], [4.0]]], np.float32)  # (X, Y, Z) = (2, 3, 1)
    ids = preprocess_prompt_labels(labels, properties, label_values=np.array([0, 4, 7]))
    np.testing.assert_array_equal(ids, [[[0, 1, 2], [2, 0, 1]]])
    unknown = np.where(labels == 7, 4.0, np.where(labels == 0, -1.0, 12.0))  # -1 and 12 are no labels
    with pytest.raises(DatasetError, match=r"case x: label value\(s\) \[-1, 12\] are not among") as error:
        preprocess_prompt_labels(unknown, properties, label_values=np.array([0, 4, 7]), where="case x")
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------------- windows


def test_each_window_gets_the_boxes_the_trainer_builds() -> None:
    """Windows (with padding along W) and batches of 2: patches and boxes recorded in the model's forward."""
    plans = make_plans()
    gt = trained(plans)
    predictor = Predictor([gt], tta=False, windows_per_batch=2)
    image = np.random.default_rng(0).normal(size=(1, 5, 70, 40)).astype(np.float32)  # W < patch: padded
    labels = blocks((5, 70, 40))
    calls = record_calls(gt.model)
    ids, _ = predictor.predict_preprocessed(image, prompt_labels=labels)
    assert ids.shape == (5, 70, 40)

    patch = predictor.window.patch_size
    padded_image, _ = pad_volume(torch.from_numpy(image), patch)
    padded_labels, _ = pad_volume(torch.from_numpy(labels.astype(np.int64))[None], patch)  # background padding
    windows = window_grid(tuple(padded_image.shape[1:]), patch, predictor.window.step)
    assert len(windows) == 8 and len(calls) == 4

    def cut(volume, starts):
        return torch.stack([volume[:, t : t + patch[0], h : h + patch[1], w : w + patch[2]] for t, h, w in starts])

    for index, (patches, boxes) in enumerate(calls):
        starts = windows[2 * index : 2 * index + 2]
        torch.testing.assert_close(patches, cut(padded_image, starts), rtol=0, atol=0)
        expected = trainer_targets(gt.model, cut(padded_labels, starts)[:, 0]).boxes  # (B*T, N, 4)
        torch.testing.assert_close(boxes, expected, rtol=0, atol=0)
    assert len({tuple(boxes.flatten().tolist()) for _, boxes in calls}) == 4  # every batch has other boxes


def test_each_query_takes_the_class_of_its_prompt() -> None:
    """The paper's "GT bbox" rows take semantic labels from the prompts: a class head that says "no object"
    everywhere does not matter; each query's mask counts for the class of the box it was prompted with."""
    plans = make_plans()
    gt = trained(plans)
    with torch.no_grad():
        head = gt.model.mask_decoder.class_head
        head.weight.zero_()
        head.bias.fill_(-20.0)
        head.bias[-1] = 20.0  # "no object", whatever the query
    labels = torch.from_numpy(blocks(TINY_PATCH).astype(np.int64))[None]  # (1, T, H, W)
    patches = torch.randn(1, 1, *TINY_PATCH, generator=torch.Generator().manual_seed(0))
    scores = Predictor([gt], tta=False).score_patches(patches, prompt_labels=labels)  # (1, K, T, H, W)
    targets = trainer_targets(gt.model, labels)
    with torch.no_grad():
        output = gt.model(patches, targets.boxes)
    expected = prompted_semantic_scores(
        targets.class_ids, output.mask_logits, num_classes=3, prompt_boxes=targets.boxes
    )  # (T, K, H, W)
    torch.testing.assert_close(scores[0].transpose(0, 1), expected)
    from_class_head = semantic_scores(output.class_logits, output.mask_logits)
    assert from_class_head.max() < 1e-6 < expected[:, 1:].amax()


@pytest.mark.parametrize("mirror_depth", [False, True], ids=["in-plane", "with-depth"])
@pytest.mark.slow
def test_tta_mirrors_boxes_with_the_image(mirror_depth: bool) -> None:
    """TTA equals a manual average over mirrored copies of image and labels; the mirrored boxes are mirrored."""
    plans = make_plans()
    image = np.random.default_rng(1).normal(size=(1, 3, 96, 64)).astype(np.float32)  # a symmetric window grid
    labels = blocks((3, 96, 64))
    gt = trained(plans)
    mirrored = Predictor([gt], tta=True, mirror_depth=mirror_depth, windows_per_batch=2)
    calls = record_calls(gt.model)
    _, scores = mirrored.predict_preprocessed(image, keep_scores=True, prompt_labels=labels)

    plain = Predictor([gt], tta=False, windows_per_batch=2)
    flips = mirror_combinations(mirrored.mirror_axes)
    manual = np.zeros(scores.shape, np.float32)
    for flip in flips:
        axes = tuple(axis - 1 for axis in flip)  # patch axes (B, C, T, H, W) -> volume axes (C, T, H, W)
        flipped_image = np.flip(image, axes).copy()
        flipped_labels = np.flip(labels, tuple(axis - 1 for axis in axes)).copy()
        _, flipped = plain.predict_preprocessed(flipped_image, keep_scores=True, prompt_labels=flipped_labels)
        manual += np.flip(flipped.astype(np.float32), axes) / len(flips)
    np.testing.assert_allclose(scores.astype(np.float32), manual, atol=3e-3)
    _, wrong_boxes = plain.predict_preprocessed(image, keep_scores=True, prompt_labels=labels[:, ::-1].copy())
    assert np.abs(wrong_boxes.astype(np.float32) - scores.astype(np.float32)).max() > 0.05  # boxes matter

    # First batch (windows at h = 0 and 32), hand-mirrored boxes: x -> 1 - x under a W flip, y -> 1 - y under an
    # H flip (valid boxes only; padding boxes stay zero).
    per_copy = {flip: boxes for flip, (_, boxes) in zip(flips, calls, strict=False)}  # the first batch's copies
    reference = per_copy[()]
    first_windows = torch.from_numpy(np.stack([labels[:2, :64], labels[:2, 32:]]).astype(np.int64))  # (2, T, H, W)
    valid = trainer_targets(gt.model, first_windows).valid  # (B*T, N)
    for flip, axes_swapped in (((WIDTH_AXIS,), (0, 2)), ((HEIGHT_AXIS,), (1, 3))):
        expected = reference.clone()
        first, second = axes_swapped
        expected[..., first], expected[..., second] = 1 - reference[..., second], 1 - reference[..., first]
        torch.testing.assert_close(per_copy[flip][valid], expected[valid])
        assert not torch.equal(per_copy[flip][valid], reference[valid])


# ------------------------------------------------------------------------------------ generated mode, cases


@pytest.mark.parametrize("kind", ["stub", "tiny-generated"])
def test_generated_mode_ignores_prompt_labels(kind: str) -> None:
    """The stub's forward takes no boxes at all; the tiny model must give bit-identical scores."""
    plans = make_plans()
    model = stub_model(plans) if kind == "stub" else trained(plans, prompt_mode="generated")
    predictor = Predictor([model], tta=True, windows_per_batch=2)
    image = synthetic_image((40, 36, 8))
    with_labels = predictor.predict(image[None], AFFINE, probabilities=True, prompt_labels=reference_labels(image))
    without = predictor.predict(image[None], AFFINE, probabilities=True)
    assert not predictor.needs_prompt_labels
    np.testing.assert_array_equal(with_labels.labels, without.labels)
    np.testing.assert_array_equal(with_labels.scores, without.scores)


def test_ground_truth_model_predicts_a_case_from_files(tmp_path: Path) -> None:
    plans = make_plans()
    predictor = Predictor([trained(plans)], tta=False)
    image = synthetic_image((40, 36, 8))
    files = write_case(tmp_path / "in", "case", [image], AFFINE)
    label_file = tmp_path / "labels" / "case.nii.gz"
    label_file.parent.mkdir()
    nib.save(nib.Nifti1Image(reference_labels(image), AFFINE), str(label_file))
    written = predictor.predict_case(files, tmp_path / "out" / "case.nii.gz", prompt_labels=label_file)
    from_files = np.asanyarray(nib.load(str(written[0])).dataobj)
    from_arrays = predictor.predict_array(image[None], AFFINE, prompt_labels=reference_labels(image))
    np.testing.assert_array_equal(from_files, from_arrays)
    assert from_files.shape == (40, 36, 8) and set(np.unique(from_files)) <= {0, 1, 2}


def test_mixed_folds_give_boxes_only_to_the_ground_truth_one() -> None:
    plans = make_plans()
    gt, generated = trained(plans), stub_model(plans)
    calls = record_calls(gt.model)
    patches = torch.randn(1, 1, 2, 64, 64)
    labels = torch.from_numpy(blocks((2, 64, 64)).astype(np.int64))[None]
    with torch.inference_mode():
        both = Predictor([gt, generated], tta=False).score_patches(patches, prompt_labels=labels)
        alone = Predictor([gt], tta=False).score_patches(patches, prompt_labels=labels)
        stub = Predictor([generated], tta=False).score_patches(patches)
    torch.testing.assert_close(both, (alone + stub) / 2)
    assert len(calls) == 2 and all(boxes is not None for _, boxes in calls)


# ----------------------------------------------------------------------------------------------- refusals


def predict_arrays(predictor: Predictor, tmp_path: Path, labels) -> None:
    predictor.predict(synthetic_image((40, 36, 8))[None], AFFINE, prompt_labels=labels)


def predict_files(predictor: Predictor, tmp_path: Path, labels) -> None:
    image = synthetic_image((40, 36, 8))
    files = write_case(tmp_path / "in", "case", [image], AFFINE)
    path = None
    if labels is not None:
        path = tmp_path / "case.nii.gz"
        if isinstance(labels, tuple):  # (array, affine)
            nib.save(nib.Nifti1Image(*labels), str(path))
        elif not isinstance(labels, str):  # "missing": no file
            nib.save(nib.Nifti1Image(labels, AFFINE), str(path))
    predictor.predict_case(files, tmp_path / "out" / "case.nii.gz", prompt_labels=path)


GOOD = reference_labels(synthetic_image((40, 36, 8)))
CROWDED = GOOD.copy()
CROWDED[5:9, 5:9] = 3  # four segments per slice: background, 1, 2, 3


@pytest.mark.parametrize(
    ("predict", "labels", "num_queries", "error", "message"),
    [
        pytest.param(predict_arrays, None, 4, ConfigError, "prompt_mode 'ground_truth'.*--prompt-labels", id="none"),
        pytest.param(predict_files, None, 4, ConfigError, "prompt_mode 'ground_truth'", id="no-file"),
        pytest.param(predict_files, "missing", 4, DatasetError, "case case: prompt labels .* not found", id="missing"),
        pytest.param(predict_arrays, GOOD[:, :-1], 4, DatasetError, "differs from the image's", id="shape"),
        pytest.param(
            predict_files, (GOOD, np.diag([1.5, 1.5, 5.0, 1.0])), 4, DatasetError, "grid .* differs", id="affine"
        ),
        pytest.param(predict_files, GOOD * 3, 4, DatasetError, r"label value\(s\) \[3, 6\]", id="unknown-value"),
        pytest.param(predict_arrays, CROWDED, 3, DatasetError, "holds 4 segments .* 3 queries", id="crowded"),
    ],
)
def test_refusals_are_one_line_errors(tmp_path: Path, predict, labels, num_queries, error, message) -> None:
    plans = make_plans(num_classes=4 if labels is CROWDED else 3)
    predictor = Predictor([trained(plans, num_queries=num_queries)], tta=False)
    with pytest.raises(error, match=message) as raised:
        predict(predictor, tmp_path, labels)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_score_patches_without_labels_is_refused() -> None:
    predictor = Predictor([trained(make_plans())], tta=False)
    with pytest.raises(ConfigError, match="ground_truth.pt: model trained with prompt_mode 'ground_truth'"):
        predictor.score_patches(torch.zeros(1, 1, 2, 64, 64))


# ------------------------------------------------------------------------------------------------- trainer


def test_final_validation_of_a_ground_truth_model(tmp_path: Path) -> None:
    """``Trainer.validate_cases`` passes each validation case's labels (no training needed for the check)."""
    from data.dataset_builders import make_dataset

    from masksam.data.pipeline import plan_and_preprocess
    from masksam.data.plans import Plans
    from masksam.training.config import TrainingConfig
    from masksam.training.setup import model_config_for

    raw = make_dataset(tmp_path / "Dataset001_Synthetic", num_cases=4)
    plan_and_preprocess(
        raw, tmp_path / "plans", preset="none", num_workers=0, num_folds=4, preprocess=False, progress=False
    )
    plans = Plans.load(tmp_path / "plans")
    config = model_config_for(plans, backbone="tiny", prompt_mode="ground_truth", queries="matched")
    config = replace(config, patch_size=(2, 64, 64), num_queries=3)  # small and fast; 3 classes fit 3 queries
    trainer = Trainer(
        model_config=config,
        training_config=TrainingConfig(num_workers=0, validation_patches=0),
        plans=plans,
        plans_dir=tmp_path / "plans",
        output_dir=tmp_path / "model",
        backbone_checkpoint=None,
        show_progress=False,
    )
    torch.set_num_threads(1)  # the trainer chose threads for training beside data workers
    trainer.validate_cases(raw)
    validation = tmp_path / "model" / "fold_0" / "validation"
    assert sorted(p.name for p in validation.glob("*.nii.gz")) == [f"{case}.nii.gz" for case in trainer.val_ids]
    assert json.loads((validation / "summary.json").read_text())
