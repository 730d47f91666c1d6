"""Predicting label maps of whole volumes with one or more trained folds (DESIGN §6).

For one case, given as channels in file order (C, X, Y, Z) with the file's affine::

    preprocess exactly as training (``preprocess_arrays``: transpose, crop to non-zero, normalise, resample)
      -> sliding window (Gaussian weighting; mirroring TTA; the folds' semantic scores averaged per window)
      -> argmax per finished slab of slices, in the preprocessed grid
      -> ``restore_original_geometry`` of the class-id map -> class id to label value -> the file's grid

Memory choice. Averaging the folds per window equals averaging their whole score maps (the blend is linear),
so one pass serves the ensemble. The sliding window hands out finished slices as soon as no later window
touches them, and each slab is reduced to class ids at once: the only full-volume arrays are the input, the
preprocessed image, and (T, H, W) uint8 class ids. The accumulator spans about one patch depth (K × ~T_patch
× H × W float32). The class-id map is taken back to the file grid by ``resample_label`` (linear interpolation
of one class's mask at a time, the strongest class wins) rather than resampling K float score maps and taking
the argmax there. Measured on a 512×512×300 CT (``benchmarks/bench_predict.py``): 2.3 GB peak RSS whatever
K, against 5.9 GB for a whole (K, T, H, W) float32 accumulator at K = 16 and 4.2 GB for file-grid scores already
at K = 4 (about 13 GB at K = 16). Both give the same labels where no resampling is needed.

With ``probabilities=True`` the scores are also kept, in float16 on the preprocessed grid (K × T × H × W × 2
bytes), and restored to the file grid one class at a time (``Prediction.class_maps``); ``predict_case``
compresses each class into the ``.npz`` as it comes, so the (K, X, Y, Z) array is never whole in memory.
The semantic scores Σ_q softmax(class)[k] · sigmoid(mask_q) are not probabilities (their sum over classes is
anything from 0 to N), so each voxel's scores are divided by their sum over the K classes (the argmax, hence the
label map, is unchanged) before they are restored: linear resampling keeps a sum of 1, and outside the non-zero
crop box the background probability is 1 and every other 0 (the label there is background).

Ground-truth prompts (``MaskSamConfig.prompt_mode == "ground_truth"``, the paper's "GT bbox" rows). Such a model
takes its box prompts from the reference labels, so a case is predicted together with its labels: they are
transposed, cropped to the image's non-zero box and resampled as a label map, exactly as training preprocesses
labels (the crop box is the image's alone, so the predicted grid does not depend on the labels), appended to the
image as one extra channel, and so cut into windows, padded (with background) and mirrored together with the
image. Each window's labels become per-slice boxes by the trainer's own ``build_targets``, and each query takes
the class of its box (the paper's "GT bbox" rows take the semantic labels from the prompts, not from the class
head). Models in generated mode never see the labels (they are not even read). The extra channel costs one more
float32 copy of the preprocessed image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masksam.data.io import Geometry, read_volume
from masksam.data.plans import Plans
from masksam.data.preprocessing import preprocess_arrays, restore_original_geometry
from masksam.data.resampling import resample_label
from masksam.data.targets import SliceTargets, build_targets
from masksam.data.validation import AFFINE_ATOL, AFFINE_RTOL, nonfinite_intensities
from masksam.devices import resolve_device
from masksam.errors import CheckpointError, ConfigError, DatasetError
from masksam.inference.export import (
    label_dtype,
    nifti_ending,
    probabilities_path,
    write_label_map,
    write_probabilities,
)
from masksam.inference.semantic import query_scores
from masksam.inference.sliding_window import ScoreFunction, SlidingWindowConfig, stream_scores, window_grid
from masksam.inference.tta import mirror_axes, with_mirroring
from masksam.model_files import (
    CHECKPOINT_NAMES,
    TrainedModel,
    checkpoint_path,
    find_fold_checkpoints,
    fold_dir,
    load_trained_model,
)
from masksam.precision import configure_cuda_kernels, resolve_precision

# (windows done, windows in all) of one case, after each batch of windows.
WindowProgress = Callable[[int, int], None]
# A channel file with at most this many distinct integer values looks like a label map, not an image.
_LABEL_LIKE_VALUES = 16
# Voxels looked at for that (a strided sample: a label map shows its few values in any large sample).
_LABEL_LIKE_SAMPLE = 1_000_000
# A voxel whose class scores sum to no more than this is called background (its probabilities are 1, 0, ...).
_EMPTY_SCORE = 1e-6
# Plans fields that must agree between folds for their predictions to be averaged.
_SHARED_PLANS_FIELDS = ("channel_names", "labels", "num_classes", "transpose", "target_spacing", "anisotropic")


@dataclass
class Prediction:
    """A case's prediction: the label map on its file grid, optionally the class scores.

    Attributes:
        labels: (X, Y, Z) label values (uint8, or int16 beyond 255), file voxel order.
        affine: The file's 4x4 affine.
        scores: (K, T, H, W) float16 class scores on the preprocessed grid (the folds' mean semantic scores, not
            normalised), or None.
        properties: The preprocessing properties that map ``scores`` back to the file grid.
    """

    labels: np.ndarray
    affine: np.ndarray
    scores: np.ndarray | None = None
    properties: dict | None = None

    def class_maps(self) -> Iterator[np.ndarray]:
        """Each class's probabilities on the file grid, one (X, Y, Z) float32 array at a time.

        A voxel's probabilities are its class scores divided by their sum over the classes, so they sum to 1 (a
        voxel whose scores are all 0 is background); see the module docstring.

        Raises:
            ValueError: The prediction was made without scores.
        """
        if self.scores is None or self.properties is None:
            raise ValueError("no class scores kept; predict with probabilities=True")
        total = self.scores.sum(axis=0, dtype=np.float32)  # (T, H, W)
        empty = total <= _EMPTY_SCORE
        total[empty] = 1.0
        for index in range(self.scores.shape[0]):  # one float32 class map at a time bounds memory
            channel = (self.scores[index] / total)[None].astype(np.float32)  # (1, T, H, W), sums to 1 over classes
            channel[0][empty] = 1.0 if index == 0 else 0.0
            if index == 0:  # restored as 1 - score, so the area outside the crop box gets background score 1
                channel = 1.0 - channel
            values, _ = restore_original_geometry(channel, self.properties, is_label=False)  # (1, X, Y, Z)
            yield 1.0 - values[0] if index == 0 else values[0]

    def probabilities(self) -> np.ndarray:
        """(K, X, Y, Z) float16 class probabilities on the file grid (all classes in memory at once)."""
        maps = [class_map.astype(np.float16) for class_map in self.class_maps()]
        return np.stack(maps)


def cross_validation_folds(model_dir: Path) -> list[int]:
    """The numbered folds of a model folder (``fold_0``, ``fold_1``, ...; not ``fold_all``), in order."""
    numbers = [path.name.removeprefix("fold_") for path in Path(model_dir).glob("fold_*") if path.is_dir()]
    return sorted(int(number) for number in numbers if number.isdigit())


def fold_folder_advice(model_dir: Path) -> str | None:
    """For ``-m`` given one fold's folder (``MODEL/fold_0``) or one of its checkpoint files: the options that name
    it the right way, else None."""
    model_dir = Path(model_dir)
    name = model_dir.name.removeprefix("checkpoint_").removesuffix(".pt")
    if model_dir.is_file() and name in CHECKPOINT_NAMES and fold_folder_advice(model_dir.parent) is not None:
        fold = model_dir.parent.name.removeprefix("fold_")
        return (
            f"{model_dir}: is a checkpoint file; -m takes the training output folder: "
            f"-m {model_dir.parent.parent} -f {fold} -c {name}"
        )
    fold = model_dir.name.removeprefix("fold_")
    if not model_dir.name.startswith("fold_") or not (fold.isdigit() or fold == "all"):
        return None
    if not any(checkpoint_path(model_dir, name).is_file() for name in CHECKPOINT_NAMES):
        return None
    return (
        f"{model_dir}: is one fold's folder; -m takes the training output folder above it: "
        f"-m {model_dir.parent} -f {fold}"
    )


def select_checkpoints(
    model_dir: Path,
    *,
    folds: Sequence[int] | None = None,
    checkpoint: str | None = None,
    allow_unfinished: bool = False,
) -> tuple[list[Path], list[str]]:
    """The checkpoint file of every fold to predict with (nnU-Net's conventions).

    By default the ensemble is the finished cross-validation folds, ``fold_0``, ``fold_1``, ... (``fold_all`` only
    when asked for, as fold -1): mixing the model trained on every case with the folds, or a fold whose training
    was cut short, would change the result without a word. ``checkpoint=None`` takes each fold's
    ``checkpoint_final.pt``; a fold without one is refused unless ``allow_unfinished`` (then its
    ``checkpoint_latest.pt``, with a warning). A named checkpoint is required as named in every fold.

    Args:
        model_dir: Training output folder (``MODEL_DIR/fold_F/checkpoint_*.pt``).
        folds: Folds to use (-1 for ``fold_all``); None for every numbered fold found.
        checkpoint: ``final``, ``best``, ``latest``, or None (see above).
        allow_unfinished: Use the latest checkpoint of a fold whose training has not finished.

    Returns:
        (checkpoint paths, warnings to show).

    Raises:
        CheckpointError: The folder or a requested checkpoint does not exist, ``-m`` names a fold's folder, or a
            fold is unfinished (without ``allow_unfinished``).
    """
    model_dir = Path(model_dir)
    advice = fold_folder_advice(model_dir)
    if advice is not None:
        raise CheckpointError(advice)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: model folder not found; pass the output folder of 'masksam train' with -m")
    folds = list(folds) if folds else cross_validation_folds(model_dir)
    if not folds:
        if any(checkpoint_path(fold_dir(model_dir, -1), name).is_file() for name in CHECKPOINT_NAMES):
            raise CheckpointError(
                f"{model_dir}: only fold_all (trained on every case) is there; predict with it by asking for it: -f all"
            )
        raise CheckpointError(
            f"{model_dir}: no fold_*/checkpoint_final.pt or checkpoint_latest.pt; train first "
            f"('masksam train DATASET -o {model_dir} --fold 0') or check -m"
        )
    if checkpoint is not None:
        return find_fold_checkpoints(model_dir, folds, checkpoint), []
    paths, warnings, unfinished = [], [], []
    for fold in folds:
        directory = fold_dir(model_dir, fold)
        final, latest = checkpoint_path(directory, "final"), checkpoint_path(directory, "latest")
        if final.is_file():
            paths.append(final)
        elif not directory.is_dir():
            raise CheckpointError(f"{final}: checkpoint not found (no {directory.name}); train that fold or change -f")
        elif not latest.is_file():
            if allow_unfinished:
                warnings.append(f"{directory}: no checkpoint (training never finished an epoch); fold left out")
            else:
                unfinished.append((directory, "has no checkpoint"))
        elif allow_unfinished:
            paths.append(latest)
            warnings.append(f"{final} not found (training unfinished); using {latest.name} instead")
        else:
            unfinished.append((directory, f"has only {latest.name}"))
    if unfinished:
        directory, what = unfinished[0]
        others = f" (and {len(unfinished) - 1} more fold(s))" if len(unfinished) > 1 else ""
        finished = [fold for fold in folds if checkpoint_path(fold_dir(model_dir, fold), "final").is_file()]
        leave_out = f", predict with the finished folds only (-f {','.join(map(str, finished))})" if finished else ""
        raise CheckpointError(
            f"{directory}: training unfinished, no checkpoint_final.pt ({what}){others}; finish it with "
            f"'masksam train ... --fold {directory.name.removeprefix('fold_')} --continue'{leave_out}, "
            "or pass --allow-unfinished to use the latest checkpoint"
        )
    if not paths:
        raise CheckpointError(
            f"{model_dir}: no fold_*/checkpoint_final.pt or checkpoint_latest.pt; train first "
            f"('masksam train DATASET -o {model_dir} --fold 0') or check -m"
        )
    return paths, warnings


def default_refinement_passes(trained: object) -> int:
    """A fold's refinement passes when none are asked for: a MaskSAM checkpoint's default, 0 for other models."""
    return trained.default_refinement_passes if isinstance(trained, TrainedModel) else 0


def uses_prompt_labels(model: torch.nn.Module) -> bool:
    """Whether a model takes its box prompts from reference labels (``config.prompt_mode == "ground_truth"``)."""
    return getattr(getattr(model, "config", None), "prompt_mode", "generated") == "ground_truth"


def preprocess_prompt_labels(
    labels: np.ndarray, properties: dict, *, label_values: np.ndarray, where: str = "prompt labels"
) -> np.ndarray:
    """A case's reference labels on its preprocessed grid, as class ids.

    The steps training applies to labels (``preprocess_arrays``): transpose, crop, resample as a label map
    (per-class linear masks, the strongest class wins). The crop box is the one recorded in ``properties``,
    the image's, so labels outside the image's non-zero box are dropped (there the prediction is background).

    Args:
        labels: (X, Y, Z) label values in file order, on the image's grid.
        properties: The preprocessing properties of the case's image.
        label_values: (K,) increasing label values of the plans; a value's position is its class id.
        where: Names the labels in error messages (case and file).

    Returns:
        (T, H, W) class ids (uint8, int16 beyond 256 classes), shape ``properties["shape_after_resampling"]``.

    Raises:
        DatasetError: A value that is not one of the plans' labels.
    """
    box = tuple(slice(start, stop) for start, stop in properties["crop_box"])
    cropped = labels.transpose(properties["transpose"])[box]  # (T, H, W) before resampling
    values = (np.rint(cropped) if np.issubdtype(cropped.dtype, np.floating) else cropped).astype(np.int64)
    largest = int(label_values[-1])
    lookup = np.full(largest + 2, -1, dtype=np.int64)  # value -> class id; the last entry catches larger values
    lookup[label_values] = np.arange(len(label_values))
    class_ids = lookup[np.clip(values, -1, largest + 1)]  # -1 (the last entry) also catches negative values
    if values.size and class_ids.min() < 0:
        unknown = np.unique(values[class_ids < 0])[:5].tolist()
        raise DatasetError(
            f"{where}: label value(s) {unknown} are not among the model's labels {label_values.tolist()}; "
            "pass the reference labels of this dataset (nnU-Net labelsTr)"
        )
    class_ids = class_ids.astype(label_dtype(len(label_values) - 1))
    size = tuple(properties["shape_after_resampling"])
    return resample_label(class_ids, size, separate=bool(properties["separate_through_plane"]))


def label_like_values(array: np.ndarray) -> list[int] | None:
    """The values of an image that looks like a label map (a few non-negative integers), else None.

    A strided sample of about a million voxels is looked at: an image has many values in it, a label map its few.
    """
    step = max(1, int(np.ceil((array.size / _LABEL_LIKE_SAMPLE) ** (1 / max(array.ndim, 1)))))
    sample = np.asarray(array[(slice(None, None, step),) * array.ndim])
    values = np.unique(sample)
    if len(values) > _LABEL_LIKE_VALUES or values.size == 0 or values.min() < 0:
        return None
    if not np.array_equal(values, np.round(values)):
        return None
    return [int(value) for value in values]


def counting_windows(score_function: ScoreFunction, total: int, progress: WindowProgress) -> ScoreFunction:
    """``score_function`` that tells ``progress`` (windows done, ``total``) after each batch of windows."""
    done = 0

    def counted(patches: torch.Tensor) -> torch.Tensor:
        nonlocal done
        scores = score_function(patches)
        done += patches.shape[0]
        progress(done, total)
        return scores

    return counted


class Predictor:
    """Predicts label maps of whole volumes with an ensemble of trained folds."""

    # ``amp auto`` on a CPU whose bf16 matrix products are fast (AMX) predicts in bf16 (`resolve_precision`).
    cpu_auto_bf16 = True

    def __init__(
        self,
        models: Sequence[TrainedModel],
        *,
        device: str | torch.device = "cpu",
        step: float = 0.5,
        tta: bool = True,
        mirror_depth: bool = False,
        windows_per_batch: int = 4,
        amp: str = "auto",
        refinement_passes: int | None = None,
    ) -> None:
        """
        Args:
            models: One trained model per fold (same plans and patch); their class scores are averaged.
            device: Where windows are scored (``"auto"``: CUDA if available).
            step: Largest distance between windows as a fraction of the patch.
            tta: Average over mirrored copies of every window (H and W; also T with ``mirror_depth``).
            mirror_depth: Also mirror the through-plane axis (8 instead of 4 copies).
            windows_per_batch: Windows per forward pass.
            amp: Autocast of the forward passes, as training's ``--amp``: ``auto`` (bf16 on GPUs of compute
                capability 8.0 or newer, fp16 on older ones; on the CPU bf16 where measured fast, else
                float32), ``bf16``, ``fp16`` or ``off``.
            refinement_passes: Extra decoder passes of generated-prompt models, each prompted with the previous
                pass's segments (:mod:`masksam.model.refinement`); ground-truth prompt models ignore it. None:
                each model's default (``TrainedModel.default_refinement_passes``: 1 when it was trained with
                denoising queries).

        Raises:
            CheckpointError: No models, or folds trained with different plans or model settings.
            ConfigError: Invalid step or windows per batch, an unavailable device, or a precision it lacks.
        """
        if not models:
            raise CheckpointError("no trained model given; pass at least one checkpoint")
        first = models[0]
        for other in models[1:]:
            _check_same_training(first, other)
        if not 0 < step <= 1:
            raise ConfigError(f"step {step} must be in (0, 1] (0.5: windows overlap by half)")
        if windows_per_batch < 1:
            raise ConfigError(f"windows per batch must be at least 1, got {windows_per_batch}")
        if refinement_passes is not None and refinement_passes < 0:
            raise ConfigError(f"refinement passes must be 0 or more, got {refinement_passes}")
        self.refinement_passes = [
            refinement_passes if refinement_passes is not None else default_refinement_passes(trained)
            for trained in models
        ]  # per fold
        self.device = resolve_device(device)
        self.precision = resolve_precision(amp, self.device, cpu_auto_bf16=self.cpu_auto_bf16)
        configure_cuda_kernels(self.device)
        self.plans: Plans = first.plans
        config = first.model.config
        self.num_classes: int = config.num_classes
        self.include_background: bool = config.include_background
        self.models = [trained.model.to(self.device).eval() for trained in models]
        self.paths = [trained.path for trained in models]
        self.window = SlidingWindowConfig(
            patch_size=tuple(config.patch_size), step=step, windows_per_batch=windows_per_batch
        )
        self.mirror_axes = mirror_axes(mirror_depth=mirror_depth) if tta else ()
        values = sorted(set(self.plans.labels.values()))
        if len(values) != self.num_classes:
            raise CheckpointError(
                f"{first.path}: plans list {len(values)} labels but the model predicts {self.num_classes} classes"
            )
        self.label_values = np.asarray(values, dtype=label_dtype(max(values)))  # class id -> label value
        by_value = {value: name for name, value in self.plans.labels.items()}
        self.class_names = [by_value[value] for value in values]

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[Path],
        *,
        device: str | torch.device = "cpu",
        backbone_checkpoint: Path | None = None,
        **settings,
    ) -> Predictor:
        """Loads one model per checkpoint file and builds a predictor (``settings``: see ``__init__``).

        Raises:
            CheckpointError: A checkpoint is missing, unreadable or inconsistent with the others.
        """
        resolved = resolve_device(device)
        models = [load_trained_model(path, device=resolved, backbone_checkpoint=backbone_checkpoint) for path in paths]
        return cls(models, device=resolved, **settings)

    @property
    def num_channels(self) -> int:
        """C, input channels the models need."""
        return self.plans.num_channels

    @property
    def needs_prompt_labels(self) -> bool:
        """True when a fold was trained in ground-truth prompt mode and takes its boxes from reference labels."""
        return any(uses_prompt_labels(model) for model in self.models)

    def require_prompt_labels(self, given: bool) -> None:
        """Refuses to predict without reference labels when a fold needs them.

        Raises:
            ConfigError: A ground-truth prompt mode fold and ``given`` is False.
        """
        if given or not self.needs_prompt_labels:
            return
        path = next(path for path, model in zip(self.paths, self.models, strict=True) if uses_prompt_labels(model))
        raise ConfigError(
            f"{path}: model trained with prompt_mode 'ground_truth' takes its box prompts from the reference "
            "labels; pass them (masksam predict --prompt-labels DIR, or prompt_labels=...)"
        )

    def window_targets(self, model: torch.nn.Module, prompt_labels: torch.Tensor | None) -> SliceTargets | None:
        """A model's prompts for a batch of windows, built from the labels exactly as the trainer builds them.

        Args:
            model: One fold's model.
            prompt_labels: (B, T, H, W) long class ids of the windows, or None.

        Returns:
            For a ground-truth prompt mode model, the windows' per-slice targets (``build_targets``): boxes
            (B*T, N, 4) for the prompts and class_ids (B*T, N) for the classes; None for other models.

        Raises:
            ConfigError: The model needs labels and none were given.
        """
        if not uses_prompt_labels(model):
            return None
        self.require_prompt_labels(prompt_labels is not None)
        config = model.config
        return build_targets(
            prompt_labels,
            num_classes=config.num_classes,
            num_queries=config.num_queries,
            include_background=config.include_background,
        )

    def score_patches(self, patches: torch.Tensor, *, prompt_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Fold-averaged semantic class scores of a batch of patches (no mirroring).

        Args:
            patches: (B, C, T, H, W) preprocessed patches on the predictor's device.
            prompt_labels: (B, T, H, W) long class ids of the same windows; only ground-truth prompt mode folds
                use them (their box prompts, and each query's class: the class of its prompt).

        Returns:
            (B, K, T, H, W) float32 scores.

        Raises:
            ConfigError: A fold needs prompt labels and none were given.
        """
        batch, _, num_slices, height, width = patches.shape
        total = None
        for model, passes in zip(self.models, self.refinement_passes, strict=True):
            targets = self.window_targets(model, prompt_labels)
            with self.precision.autocast():
                if targets is None:
                    output = model(patches, refinement_passes=passes)
                else:
                    output = model(patches, targets.boxes)
            scores = query_scores(
                output, targets, num_classes=self.num_classes, include_background=self.include_background
            )  # (B*T, K, H, W), float32
            scores = scores.reshape(batch, num_slices, -1, height, width).transpose(1, 2)  # (B, K, T, H, W)
            total = scores if total is None else total + scores
        return total / len(self.models)

    def score_function(self, *, with_prompt_labels: bool = False) -> ScoreFunction:
        """The sliding window's score function: :meth:`score_patches` with mirroring TTA.

        Args:
            with_prompt_labels: Windows carry the labels as their last channel, (B, C+1, T, H, W); they are split
                off after mirroring, so the boxes always come from labels mirrored like the image.

        Returns:
            (B, C(+1), T, H, W) patches -> (B, K, T, H, W) scores.
        """
        if not with_prompt_labels:
            return with_mirroring(self.score_patches, self.mirror_axes)

        def score_with_labels(patches: torch.Tensor) -> torch.Tensor:
            images, labels = patches[:, :-1], patches[:, -1].round().long()  # (B, C, T, H, W), (B, T, H, W)
            return self.score_patches(images, prompt_labels=labels)

        return with_mirroring(score_with_labels, self.mirror_axes)

    def check_prompt_labels(self, prompt_labels: np.ndarray, image_shape: tuple[int, ...], *, where: str) -> None:
        """Checks preprocessed prompt labels before any window runs (``build_targets`` would fail mid-volume).

        Args:
            prompt_labels: (T, H, W) class ids on the preprocessed grid.
            image_shape: (T, H, W) of the preprocessed image.
            where: Names the labels in error messages.

        Raises:
            DatasetError: Wrong shape, a class id outside 0..K-1, or a slice with more segments than a fold's
                queries (background counted on every slice: padding of a window adds it).
        """
        if tuple(prompt_labels.shape) != tuple(image_shape):
            raise DatasetError(
                f"{where}: shape {tuple(prompt_labels.shape)} differs from the image's {tuple(image_shape)}; "
                "give the labels on the image's grid"
            )
        if prompt_labels.size and (prompt_labels.min() < 0 or prompt_labels.max() >= self.num_classes):
            raise DatasetError(
                f"{where}: class ids {prompt_labels.min()}..{prompt_labels.max()} outside 0..{self.num_classes - 1}; "
                "map label values to class ids first"
            )
        present = np.stack([(prompt_labels == k).any(axis=(1, 2)) for k in range(self.num_classes)], axis=1)  # (T, K)
        for model in self.models:
            if not uses_prompt_labels(model):
                continue
            present[:, 0] = model.config.include_background
            counts = present.sum(axis=1)  # (T,)
            if counts.size and counts.max() > model.config.num_queries:
                raise DatasetError(
                    f"{where}: slice {int(counts.argmax())} (preprocessed) holds {int(counts.max())} segments but "
                    f"the model has {model.config.num_queries} queries; pass the reference labels of its dataset"
                )

    def count_windows(self, shape: Sequence[int]) -> int:
        """How many windows tile a preprocessed volume of (T, H, W) ``shape`` (padded to the patch if smaller)."""
        patch = self.window.patch_size
        padded = tuple(max(size, size_patch) for size, size_patch in zip(shape, patch, strict=True))
        return len(window_grid(padded, patch, self.window.step))

    def predict_preprocessed(
        self,
        image: np.ndarray,
        *,
        keep_scores: bool = False,
        prompt_labels: np.ndarray | None = None,
        where: str = "prompt labels",
        progress: WindowProgress | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class ids (and optionally scores) of a preprocessed volume.

        Args:
            image: (C, T, H, W) float32 preprocessed image.
            keep_scores: Also return the class scores.
            prompt_labels: (T, H, W) reference class ids on the same grid (:func:`preprocess_prompt_labels`);
                required by ground-truth prompt mode folds, ignored otherwise.
            where: Names the prompt labels in error messages.
            progress: Called after each batch of windows with (windows done, windows in all).

        Returns:
            (class ids (T, H, W) uint8/int16, scores (K, T, H, W) float16 or None).

        Raises:
            ConfigError: A fold needs prompt labels and none were given.
            DatasetError: Prompt labels that do not fit the image or the model (:meth:`check_prompt_labels`).
        """
        self.require_prompt_labels(prompt_labels is not None)
        with_labels = self.needs_prompt_labels
        volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))  # (C, T, H, W)
        if with_labels:
            self.check_prompt_labels(prompt_labels, image.shape[1:], where=where)
            channel = torch.from_numpy(np.asarray(prompt_labels, dtype=np.float32))[None]  # (1, T, H, W)
            volume = torch.cat([volume, channel])  # (C+1, T, H, W): cut, padded and mirrored with the image
        class_ids = np.empty(volume.shape[1:], dtype=label_dtype(self.num_classes - 1))
        scores = np.empty((self.num_classes, *volume.shape[1:]), np.float16) if keep_scores else None
        score_function = self.score_function(with_prompt_labels=with_labels)
        if progress is not None:
            score_function = counting_windows(score_function, self.count_windows(volume.shape[1:]), progress)
        with torch.inference_mode():
            for slab in stream_scores(
                volume, score_function, num_classes=self.num_classes, config=self.window, device=self.device
            ):
                ids = slab.scores.argmax(dim=0).to(torch.int16)  # (rows, H, W)
                class_ids[slab.start : slab.stop] = ids.cpu().numpy()
                if scores is not None:
                    scores[:, slab.start : slab.stop] = slab.scores.half().cpu().numpy()
        return class_ids, scores

    def background_only(
        self, shape: Sequence[int], *, keep_scores: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class ids (and scores) of a blank (all-zero) image of preprocessed (T, H, W) ``shape``: all background.

        A blank image has nothing to segment, whatever a model would make of the constant input; its crop box is
        empty, and outside the crop box predictions are background (as for every other image).
        """
        class_ids = np.zeros(tuple(shape), dtype=label_dtype(self.num_classes - 1))
        scores = None
        if keep_scores:
            scores = np.zeros((self.num_classes, *shape), np.float16)
            scores[0] = 1
        return class_ids, scores

    def predict(
        self,
        image: np.ndarray,
        affine: np.ndarray,
        *,
        probabilities: bool = False,
        prompt_labels: np.ndarray | None = None,
        where: str = "prompt labels",
        progress: WindowProgress | None = None,
    ) -> Prediction:
        """Predicts one case given as arrays in file order.

        Args:
            image: (C, X, Y, Z) channels in the file's voxel order.
            affine: The files' 4x4 voxel-to-world matrix.
            probabilities: Also keep the class scores (``Prediction.class_maps`` / ``probabilities``).
            prompt_labels: (X, Y, Z) reference label values on the image's grid; required by ground-truth prompt
                mode folds (their box prompts), ignored otherwise.
            where: Names the prompt labels in error messages.
            progress: Called after each batch of windows with (windows done, windows in all).

        Returns:
            The label map on the file grid (and the scores).

        Raises:
            DatasetError: Wrong number of channels or dimensions, or prompt labels that do not fit.
            ConfigError: A fold needs prompt labels and none were given.
        """
        if image.ndim != 4 or image.shape[0] != self.num_channels:
            raise DatasetError(
                f"image of shape {image.shape} does not fit the model: it needs (C, X, Y, Z) with "
                f"C = {self.num_channels} channel(s) ({', '.join(self.plans.channel_names.values())})"
            )
        self.require_prompt_labels(prompt_labels is not None)
        if self.needs_prompt_labels and tuple(prompt_labels.shape) != tuple(image.shape[1:]):
            raise DatasetError(
                f"{where}: shape {tuple(prompt_labels.shape)} differs from the image's {tuple(image.shape[1:])}; "
                "give the case's labels on the image's grid"
            )
        geometry = Geometry.from_affine(image.shape[1:], affine)
        preprocessed, _, properties = preprocess_arrays(image, None, geometry, self.plans)
        labels = None
        if self.needs_prompt_labels:
            labels = preprocess_prompt_labels(prompt_labels, properties, label_values=self.label_values, where=where)
        if np.any(image):
            class_ids, scores = self.predict_preprocessed(
                preprocessed, keep_scores=probabilities, prompt_labels=labels, where=where, progress=progress
            )
        else:  # no non-zero voxel: the crop box is empty, and outside it every voxel is background
            class_ids, scores = self.background_only(preprocessed.shape[1:], keep_scores=probabilities)
        del preprocessed, labels
        restored, file_affine = restore_original_geometry(class_ids, properties, is_label=True)
        labels = self.label_values[restored]  # (X, Y, Z) label values
        return Prediction(labels=labels, affine=file_affine, scores=scores, properties=properties)

    def predict_array(
        self, image: np.ndarray, affine: np.ndarray, *, prompt_labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Label map (X, Y, Z) of a (C, X, Y, Z) image in file order (see :meth:`predict`)."""
        return self.predict(image, affine, prompt_labels=prompt_labels).labels

    def predict_case(
        self,
        files: Sequence[Path],
        output_path: Path,
        *,
        save_probabilities: bool = False,
        prompt_labels: Path | None = None,
        progress: WindowProgress | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> list[Path]:
        """Predicts one case from its channel files and writes ``output_path`` (and ``CASE.npz``).

        Args:
            files: One NIfTI file per channel, in channel order.
            output_path: Label map to write (``.nii.gz``/``.nii``); gets the first channel file's header.
            save_probabilities: Also write the class scores as ``.npz`` beside it.
            prompt_labels: The case's reference label file (nnU-Net ``labelsTr/CASE.nii.gz``) on the image's grid;
                required by ground-truth prompt mode folds, not read otherwise.
            progress: Called after each batch of windows with (windows done, windows in all).
            warn: Told (one line) about a channel file that looks like a label map rather than an image; the case
                is still predicted.

        Returns:
            The files written.

        Raises:
            DatasetError: Unreadable files, wrong channel count, channels or prompt labels on different grids,
                missing prompt labels file.
            ConfigError: A fold needs prompt labels and none were given.
            MaskSamError: The output would overwrite an input.
        """
        files = [Path(f) for f in files]
        case_id = Path(output_path).name[: -len(nifti_ending(Path(output_path)))]
        self.require_prompt_labels(prompt_labels is not None)
        if len(files) != self.num_channels:
            raise DatasetError(
                f"case {case_id}: {len(files)} channel file(s) given but the model needs {self.num_channels}; "
                "pass one file per channel (CASE_0000, CASE_0001, ...)"
            )
        if self.needs_prompt_labels and not Path(prompt_labels).is_file():
            raise DatasetError(
                f"case {case_id}: prompt labels {prompt_labels} not found; the ground_truth prompt mode model needs "
                "every case's reference labels (add the file or remove the case)"
            )
        volumes = [read_volume(path, case_id=case_id) for path in files]
        for volume in volumes:
            nonfinite = nonfinite_intensities(volume.array)
            if nonfinite is not None:
                raise DatasetError(f"case {case_id}, file {volume.path}: {nonfinite}; fix or re-export the image")
            values = label_like_values(volume.array)
            if values is not None and warn is not None:
                shown = ", ".join(str(value) for value in values[:8]) + (" ..." if len(values) > 8 else "")
                warn(
                    f"case {case_id}, file {volume.path}: holds only the integer values {shown}, like a label map, "
                    "not an image; predict the images (imagesTs), not the labels (labelsTr)"
                )
        reference = volumes[0]
        for volume in volumes[1:]:
            if volume.geometry.shape != reference.geometry.shape:
                raise DatasetError(
                    f"case {case_id}, file {volume.path}: shape {volume.geometry.shape} differs from "
                    f"{reference.path.name}'s {reference.geometry.shape}; resample all channels onto one grid"
                )
        labels = None
        if self.needs_prompt_labels:
            labels = read_volume(Path(prompt_labels), case_id=case_id, is_label=True)
            same_grid = labels.geometry.shape == reference.geometry.shape and np.allclose(
                labels.geometry.affine, reference.geometry.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL
            )
            if not same_grid:
                raise DatasetError(
                    f"case {case_id}, prompt labels {labels.path}: grid (shape {labels.geometry.shape} or affine) "
                    f"differs from {reference.path.name}'s; give labels on the image's grid"
                )
        image = np.stack([volume.array for volume in volumes])  # (C, X, Y, Z)
        del volumes
        prediction = self.predict(
            image,
            reference.geometry.affine,
            probabilities=save_probabilities,
            prompt_labels=None if labels is None else labels.array,
            where=f"case {case_id}, prompt labels {prompt_labels}",
            progress=progress,
        )
        del image, labels
        written = [write_label_map(prediction.labels, files[0], Path(output_path), inputs=files)]
        if save_probabilities:
            written.append(
                write_probabilities(
                    prediction.class_maps(),
                    probabilities_path(Path(output_path)),
                    class_names=self.class_names,
                    inputs=files,
                )
            )
        return written


def _check_same_training(first: TrainedModel, other: TrainedModel) -> None:
    """Raises a one-line CheckpointError when two folds cannot be averaged."""
    first_plans, other_plans = first.plans.to_json(), other.plans.to_json()
    differences = [name for name in _SHARED_PLANS_FIELDS if first_plans[name] != other_plans[name]]
    if first_plans["normalization"] != other_plans["normalization"]:
        differences.append("normalization")
    for name in ("patch_size", "num_classes", "include_background", "in_channels"):
        if getattr(first.model.config, name) != getattr(other.model.config, name):
            differences.append(name)
    if differences:
        raise CheckpointError(
            f"{other.path}: trained with other settings than {first.path} ({', '.join(differences)}); "
            "ensemble only folds of one training run"
        )
