"""``masksam show``: PNG pictures of a case — label overlays, and with a model its generated box prompts.

    masksam show CASE_0000.nii.gz -l CASE.nii.gz -p pred/CASE.nii.gz -o case.png
    masksam show CASE_0000.nii.gz -l CASE.nii.gz -m MODEL_DIR --slices 3,5 -o case.png   # + case_prompts.png

The overlay picture is in the file's voxel order (rows: first remaining axis, columns: second); the prompt
picture is in the model's preprocessed grid, where the boxes live. Class names come from the model's plans,
else from the ``dataset.json`` of an nnU-Net folder holding the label (``DATASET/labelsTr/CASE.nii.gz``),
else the label values are shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import typer

from masksam.errors import ConfigError, DatasetError


def parse_slices(text: str | None) -> list[int] | None:
    """``"3,5"`` or ``"3 5"`` -> [3, 5]; None or blank -> None (automatic choice).

    Raises:
        ConfigError: Not a list of integers.
    """
    if text is None or not text.strip():
        return None
    try:
        return [int(item) for item in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--slices {text!r}: expected slice indices like 3,5") from None


def parse_axis(text: str) -> int | None:
    """``"auto"`` -> None; ``"0"``, ``"1"``, ``"2"`` -> that axis.

    Raises:
        ConfigError: Anything else.
    """
    if text == "auto":
        return None
    if text in ("0", "1", "2"):
        return int(text)
    raise ConfigError(f"--axis {text!r}: choose auto, 0, 1 or 2")


def prompts_path(output: Path) -> Path:
    """``OUT_prompts.png`` beside ``OUT.png``."""
    return output.with_name(f"{output.stem}_prompts.png")


def read_labels(path: Path, image_volume, what: str):
    """Reads a label map and checks it lies on the image's grid.

    Args:
        path: NIfTI label file.
        image_volume: The image's ``Volume``.
        what: ``"label"`` or ``"prediction"`` (for messages).

    Returns:
        (X, Y, Z) int64 label values.

    Raises:
        DatasetError: Unreadable, another shape or affine, or values that are not non-negative integers.
    """
    from masksam.data.io import read_volume
    from masksam.data.validation import AFFINE_ATOL, AFFINE_RTOL

    volume = read_volume(path, is_label=True)
    image_path, image_geometry = image_volume.path, image_volume.geometry
    if volume.geometry.shape != image_geometry.shape:
        raise DatasetError(
            f"{path}: {what} has shape {volume.geometry.shape} but image {image_path} has {image_geometry.shape}; "
            f"pass the {what} of this image"
        )
    if not np.allclose(volume.geometry.affine, image_geometry.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL):
        difference = float(np.abs(volume.geometry.affine - image_geometry.affine).max())
        raise DatasetError(
            f"{path}: {what} and image {image_path} differ in affine (largest difference {difference:.4g}); "
            f"pass a {what} on the image's grid"
        )
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DatasetError(f"{path}: {what} values are not all integers; pass an integer label map")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise DatasetError(f"{path}: negative {what} value {int(array.min())}; labels must be 0..K-1")
    return array


def channel_files(image: Path, num_channels: int) -> list[Path]:
    """The channel files of a case: ``image`` (``CASE_0000``) and its siblings ``CASE_0001`` ...

    Raises:
        DatasetError: The model needs several channels and a sibling is missing or the name has no channel suffix.
    """
    if num_channels == 1:
        return [image]
    from masksam.data.io import split_channel_name
    from masksam.inference.export import nifti_ending

    ending = nifti_ending(image)
    parsed = split_channel_name(image.name, ending)
    if parsed is None or parsed[1] != 0:
        raise DatasetError(
            f"{image}: the model needs {num_channels} channels; pass the first channel file named CASE_0000{ending} "
            "with its siblings CASE_0001 ... beside it"
        )
    files = [image.with_name(f"{parsed[0]}_{channel:04d}{ending}") for channel in range(num_channels)]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: channel file not found; the model needs {num_channels} channels")
    return files


def class_names_for(values_needed: int, *, plans=None, label: Path | None = None) -> list[str]:
    """Name per label value: the model's plans, else ``dataset.json`` two folders above the label, else numbers."""
    names: dict[int, str] = {}
    if plans is not None:
        names = {value: name for name, value in plans.labels.items()}
    elif label is not None and (label.parent.parent / "dataset.json").is_file():
        from masksam.evaluation.summary import read_label_names

        try:
            names = read_label_names(label.parent.parent)
        except DatasetError as error:
            print(f"masksam: warning: class names not taken from dataset.json: {error}", file=sys.stderr)
    return [names.get(value, "background" if value == 0 else str(value)) for value in range(values_needed)]


def show(
    image: Path = typer.Argument(..., help="NIfTI image: the case's first channel (CASE_0000.nii.gz)."),
    label: Path = typer.Option(None, "--label", "-l", help="Reference label map on the image's grid."),
    prediction: Path = typer.Option(None, "--prediction", "-p", help="Predicted label map on the image's grid."),
    output: Path = typer.Option(..., "--output", "-o", help="PNG to write (with -m also OUT_prompts.png)."),
    model_dir: Path = typer.Option(
        None, "--model", "-m", help="Output folder of 'masksam train': also draw the model's box prompts."
    ),
    checkpoint: str = typer.Option(
        None, "--checkpoint", "-c", help="final, best or latest (default: final, else latest with a warning)."
    ),
    fold: str = typer.Option(
        None, "--fold", "-f", help="Fold of the model, e.g. 0 or all (default: the first of fold_0, fold_1, ...)."
    ),
    slices: str = typer.Option(
        None, "--slices", "-s", help="Slice indices along the slice axis, e.g. 3,5 (default: most foreground)."
    ),
    axis: str = typer.Option(
        "auto", "--axis", help="Slice axis of the file: auto (the model's, else the coarsest spacing), 0, 1 or 2."
    ),
    hide_no_object: bool = typer.Option(False, "--hide-no-object", help="Do not draw 'no object' query boxes."),
    device: str = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N (with -m)."),
    backbone_checkpoint: Path = typer.Option(
        None, "--backbone-checkpoint", help="Official SAM weights, if the recorded file is not on this machine."
    ),
) -> None:
    """Draw label overlays of a case (and, with -m, the box prompts the model generates) as PNG files."""
    from masksam.data.io import read_volume
    from masksam.visualization.overlays import check_slices, default_slices, draw_overlays

    if output.suffix.lower() != ".png":
        raise ConfigError(f"{output}: the output must be a .png file")
    volume = read_volume(image)
    shape = volume.geometry.shape
    reference = read_labels(label, volume, "label") if label is not None else None
    predicted = read_labels(prediction, volume, "prediction") if prediction is not None else None
    label_maps = [array for array in (reference, predicted) if array is not None]
    largest = max((int(array.max(initial=0)) for array in label_maps), default=0)
    trained = None
    if model_dir is not None:
        trained = _load_model(model_dir, checkpoint, fold, device, backbone_checkpoint)
        if largest >= trained.plans.num_classes:
            raise DatasetError(
                f"{label or prediction}: label value {largest} is beyond the model's {trained.plans.num_classes} "
                "classes; pass labels of the model's dataset"
            )
    chosen_axis = _slice_axis(parse_axis(axis), volume.geometry, trained)
    chosen = parse_slices(slices)
    if chosen is None:
        chosen = default_slices(shape, chosen_axis, reference if reference is not None else predicted)
    chosen = check_slices(chosen, shape, chosen_axis)
    files = channel_files(image, trained.plans.num_channels) if trained is not None else [image]
    channels = [volume.array] + [read_volume(path).array for path in files[1:]]
    for path, array in zip(files[1:], channels[1:], strict=True):
        if array.shape != shape:
            raise DatasetError(f"{path}: shape {array.shape} differs from {image}'s {shape}; put channels on one grid")

    names = class_names_for(
        max(largest + 1, trained.plans.num_classes if trained is not None else 0),
        plans=trained.plans if trained is not None else None,
        label=label or prediction,
    )
    drawn = draw_overlays(
        volume.array,
        reference=reference,
        prediction=predicted,
        slices=chosen,
        axis=chosen_axis,
        class_names=names,
        path=output,
        spacing=volume.geometry.spacing,
    )
    print(f"wrote {output} (slices {', '.join(map(str, drawn))} along axis {chosen_axis})")
    if trained is None:
        return

    from masksam.visualization.prompts import draw_prompts

    target = prompts_path(output)
    prompts = draw_prompts(
        trained,
        np.stack(channels),  # (C, X, Y, Z)
        volume.geometry,
        slices=drawn,
        path=target,
        reference=reference,
        show_no_object=not hide_no_object,
    )
    model_slices = ", ".join(str(record.grid_slice) for record in prompts)
    print(f"wrote {target} (prompts of {trained.path}; model-grid slices {model_slices})")


def _slice_axis(requested: int | None, geometry, trained) -> int:
    """The file axis to slice: the model's slice axis with a model, else ``requested``, else the coarsest spacing.

    Raises:
        ConfigError: ``requested`` differs from the model's slice axis.
    """
    from masksam.data.plans import choose_transpose

    if trained is not None:
        model_axis = int(trained.plans.transpose[0])
        if requested is not None and requested != model_axis:
            raise ConfigError(
                f"--axis {requested} differs from the model's slice axis {model_axis}; prompts exist only on the "
                "model's slices: drop --axis or -m"
            )
        return model_axis
    if requested is not None:
        return requested
    return int(choose_transpose(np.asarray(geometry.spacing), np.asarray(geometry.shape))[0])


def _load_model(model_dir: Path, checkpoint: str | None, fold: str | None, device: str, backbone: Path | None):
    """The one checkpoint to draw prompts with (``select_checkpoints``' first), loaded on ``device``.

    Raises:
        ConfigError: More than one fold asked for.
        CheckpointError: No such checkpoint, or an unreadable one.
    """
    from masksam.cli.predict_command import parse_folds
    from masksam.devices import resolve_device
    from masksam.inference.predictor import cross_validation_folds, select_checkpoints
    from masksam.training.checkpoint import load_trained_model

    folds = parse_folds(fold)
    if folds is not None and len(folds) != 1:
        raise ConfigError(f"--fold {fold!r}: show draws one model; pass one fold, e.g. --fold 0")
    if folds is None and Path(model_dir).is_dir() and not cross_validation_folds(model_dir):
        folds = [-1]  # only fold_all (or nothing, which select_checkpoints then reports): draw that one
    # A picture of a model in training is fine: its latest checkpoint (with a warning) when it has no final one.
    paths, warnings = select_checkpoints(model_dir, folds=folds, checkpoint=checkpoint, allow_unfinished=True)
    final = str(paths[0].with_name("checkpoint_final.pt"))
    for warning in warnings:
        if warning.startswith(final):
            print(f"masksam: warning: {warning}", file=sys.stderr)
    return load_trained_model(paths[0], device=resolve_device(device), backbone_checkpoint=backbone)
