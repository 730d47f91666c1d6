"""``masksam predict``: label maps for a folder of NIfTI cases (or one case's file), with the inputs' exact geometry.

Inputs as nnU-Net names them: ``CASE_0000.nii.gz`` (``_0001`` ... for more channels). ``-i`` takes a folder of
them or one such file (the case's other channel files beside it join it). A 2D image gives a 2D label map. A
channel file that holds only a few integer values (a label map renamed ``CASE_0000``) is predicted with a warning.

Folds, as nnU-Net: by default the ensemble is the finished cross-validation folds (``fold_0``, ``fold_1``, ...);
``fold_all`` (``train --fold all``) only when asked for (``-f all``). Each fold gives its ``checkpoint_final.pt``;
a fold whose training has not finished is refused, unless ``--allow-unfinished`` takes its
``checkpoint_latest.pt`` (with a warning: a long run can be tried before it ends). Naming
``--checkpoint final|best|latest`` makes that file required in every fold.

A case that cannot be predicted (unreadable file, wrong channel count, missing prompt labels, ...) gets one
error line and the others go on; the command exits non-zero at the end if any case failed. Ctrl-C stops it with
one line saying how many cases were written (each whole), which ``--continue`` then skips.

A model trained with ``--prompt-mode ground_truth`` (the paper's "GT bbox" rows) takes its box prompts from the
reference labels: ``--prompt-labels DIR`` names a folder of ``CASE.nii.gz`` files (nnU-Net labelsTr naming, the
ending of the case's images) on the images' grids. Other models ignore the folder (with a warning).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from masksam.errors import ConfigError, DatasetError, Interrupted, MaskSamError


def parse_folds(folds: str | None) -> list[int] | None:
    """``"0,1,2"`` -> [0, 1, 2]; ``"all"`` -> [-1] (``fold_all``); None -> the finished cross-validation folds.

    Raises:
        ConfigError: Not a comma-separated list of fold numbers.
    """
    if folds is None or not folds.strip():
        return None
    parsed = []
    for item in folds.split(","):
        item = item.strip()
        if item == "all":
            parsed.append(-1)
            continue
        try:
            parsed.append(int(item))
        except ValueError:
            raise ConfigError(f"--folds {folds!r}: expected fold numbers like 0,1,2 or 'all'") from None
    return parsed


def check_output_folder(input_dir: Path, output_dir: Path) -> None:
    """Refuses to write predictions into the input folder (the folder of an input file), or into a file.

    Raises:
        ConfigError: ``output_dir`` is the input folder (after resolving links), or is named like a NIfTI file.
    """
    input_folder = input_dir.parent if input_dir.is_file() else input_dir
    if output_dir.resolve() == input_folder.resolve():
        raise ConfigError(
            f"{output_dir}: the output folder is the input folder; choose another -o so inputs are never overwritten"
        )
    if output_dir.name.endswith((".nii.gz", ".nii")) and not output_dir.is_dir():
        raise ConfigError(
            f"{output_dir}: -o names a folder (CASE.nii.gz is written into it, named after the input case); "
            f"pass e.g. -o {output_dir.parent / 'predictions'}"
        )


def window_progress(bar):
    """A ``Predictor`` progress callback that shows a case's windows on a tqdm ``bar`` (reset for each case)."""

    def show(done: int, total: int) -> None:
        if bar.total != total or done < bar.n:
            bar.reset(total=total)
        bar.update(done - bar.n)

    return show


def prompt_labels_path(prompt_labels_dir: Path, case_id: str, ending: str) -> Path:
    """``DIR/CASE.nii.gz`` (the case's image ending), or ``DIR/CASE.nii`` / ``.nii.gz`` if only that exists."""
    preferred = prompt_labels_dir / f"{case_id}{ending}"
    if preferred.is_file():
        return preferred
    others = [prompt_labels_dir / f"{case_id}{other}" for other in (".nii.gz", ".nii") if other != ending]
    return next((path for path in others if path.is_file()), preferred)


def predict(
    input_dir: Path = typer.Option(
        ...,
        "--input",
        "-i",
        help="Folder of CASE_0000.nii.gz files (one per channel), or one such file (its CASE_0001... join it).",
    ),
    output_dir: Path = typer.Option(..., "--output", "-o", help="Folder for CASE.nii.gz label maps (created)."),
    model_dir: Path = typer.Option(
        ..., "--model", "-m", help="Output folder of 'masksam train' (holding fold_0, fold_1, ...), not a fold's."
    ),
    checkpoint: str = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="final, best or latest in every fold (default: final; see --allow-unfinished).",
    ),
    folds: str = typer.Option(
        None,
        "--folds",
        "-f",
        help="Folds to ensemble, e.g. 0,1,2; all is fold_all (train --fold all), used only when asked for "
        "(default: the finished cross-validation folds fold_0, fold_1, ...).",
    ),
    allow_unfinished: bool = typer.Option(
        False,
        "--allow-unfinished",
        help="Use the checkpoint_latest.pt of a fold whose training has not finished (default: refuse the fold).",
    ),
    no_tta: bool = typer.Option(False, "--no-tta", help="Skip mirroring test-time augmentation (4x faster)."),
    mirror_depth: bool = typer.Option(False, "--mirror-depth", help="Also mirror along the slice axis (8 copies)."),
    step: float = typer.Option(0.5, "--step", min=0.05, max=1.0, help="Window step as a fraction of the patch."),
    device: str = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N."),
    amp: str = typer.Option(
        "auto",
        "--amp",
        help="Autocast of the forward passes: auto (bf16 on GPUs of compute capability 8.0+, fp16 on older ones, "
        "on CPU bf16 if measured fast, else off), bf16, fp16 or off.",
    ),
    save_probabilities: bool = typer.Option(
        False,
        "--save-probabilities",
        help="Also write CASE.npz as nnU-Net does: key probabilities, float16, axes (C, z, y, x) on the file grid; "
        "each voxel's class scores divided by their sum, so they sum to 1.",
    ),
    backbone_checkpoint: Path = typer.Option(
        None, "--backbone-checkpoint", help="Official SAM weights, if the recorded file is not on this machine."
    ),
    windows_per_batch: int = typer.Option(4, "--windows-per-batch", min=1, help="Windows per forward pass."),
    refine: int = typer.Option(
        None,
        "--refine",
        min=0,
        help="Extra decoder passes, each prompted with the previous pass's segments (box and mask) as the "
        "denoising queries were in training; the image is encoded once. Default: 1 for generated-prompt models "
        "trained with denoising queries (the default), else 0.",
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads (default: 1 or every core, whichever a quick probe finds faster)."
    ),
    prompt_labels_dir: Path = typer.Option(
        None,
        "--prompt-labels",
        help="Folder of reference CASE.nii.gz labels (like labelsTr) for a model trained with --prompt-mode "
        "ground_truth: its box prompts come from them.",
    ),
    resume: bool = typer.Option(
        False,
        "--continue",
        help="Skip cases whose outputs are already in the output folder (resume an interrupted run).",
    ),
) -> None:
    """Segment every case of a folder (or one case's file) and write CASE.nii.gz with the input's affine and header.

    Folds as nnU-Net: the finished cross-validation folds are ensembled; fold_all only with -f all.
    """
    import torch
    from tqdm import tqdm

    from masksam.devices import resolve_device
    from masksam.inference.cases import find_case_of_file, find_prediction_cases
    from masksam.inference.predictor import Predictor, select_checkpoints
    from masksam.threads import choose_threads

    if not input_dir.exists():
        raise DatasetError(
            f"{input_dir}: input folder or file not found; pass a folder of CASE_0000.nii.gz files, or one, with -i"
        )
    check_output_folder(input_dir, output_dir)
    if prompt_labels_dir is not None and not prompt_labels_dir.is_dir():
        raise DatasetError(
            f"{prompt_labels_dir}: prompt labels folder not found; "
            "pass a folder of CASE.nii.gz labels with --prompt-labels"
        )
    paths, warnings = select_checkpoints(
        model_dir, folds=parse_folds(folds), checkpoint=checkpoint, allow_unfinished=allow_unfinished
    )
    for warning in warnings:
        print(f"masksam: warning: {warning}", file=sys.stderr)
    if resolve_device(device).type == "cpu":
        choice = choose_threads(threads)
        torch.set_num_threads(choice.threads)
        print(f"CPU threads: {choice.describe()}", file=sys.stderr)
    predictor = Predictor.from_checkpoints(
        paths,
        device=device,
        backbone_checkpoint=backbone_checkpoint,
        step=step,
        tta=not no_tta,
        mirror_depth=mirror_depth,
        windows_per_batch=windows_per_batch,
        amp=amp,
        refinement_passes=refine,
    )
    if predictor.needs_prompt_labels and prompt_labels_dir is None:
        raise ConfigError(
            f"{model_dir}: the model was trained with prompt_mode 'ground_truth' (box prompts from the labels); "
            "pass the reference labels with --prompt-labels DIR (CASE.nii.gz files)"
        )
    if prompt_labels_dir is not None and not predictor.needs_prompt_labels:
        print(
            f"masksam: warning: the model generates its own prompts; --prompt-labels {prompt_labels_dir} is ignored",
            file=sys.stderr,
        )
        prompt_labels_dir = None
    if input_dir.is_file():
        cases, ignored = [find_case_of_file(input_dir, num_channels=predictor.num_channels)], []
    else:
        cases, ignored = find_prediction_cases(input_dir, num_channels=predictor.num_channels)
    if ignored:
        names = ", ".join(path.name for path in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
        print(f"masksam: warning: ignored {len(ignored)} file(s) not named CASE_XXXX (e.g. {names})", file=sys.stderr)
    if not cases:
        raise DatasetError(f"{input_dir}: no CASE_0000.nii.gz files; name inputs as nnU-Net does (CASE_XXXX.nii.gz)")
    if resume:
        remaining = [case for case in cases if not case.is_predicted(output_dir, probabilities=save_probabilities)]
        if len(remaining) < len(cases):
            skipped = len(cases) - len(remaining)
            print(f"--continue: {skipped} case(s) already predicted in {output_dir}, skipped", file=sys.stderr)
        cases = remaining
    prompts = "" if prompt_labels_dir is None else f", box prompts from {prompt_labels_dir}"
    print(
        f"predicting {len(cases)} case(s) with {len(paths)} fold(s) on {predictor.device} ({predictor.precision.name})"
        f"{'' if no_tta else ', mirroring TTA'}{refinement_note(predictor.refinement_passes)}{prompts}: "
        f"{input_dir} -> {output_dir}",
        file=sys.stderr,
    )
    failed = []
    written = 0
    started = time.perf_counter()
    # Progress inside a case: its windows, on a second line under the cases' bar (a big case takes minutes).
    windows = tqdm(desc="windows", unit="window", disable=None, file=sys.stderr, leave=False, position=1)

    def warn(message: str) -> None:
        tqdm.write(f"masksam: warning: {message}", file=sys.stderr)

    try:
        for case in tqdm(cases, desc="predicting", unit="case", disable=None, file=sys.stderr, position=0):
            try:
                if case.problem is not None:
                    raise DatasetError(case.problem)
                labels = None
                if prompt_labels_dir is not None:
                    labels = prompt_labels_path(prompt_labels_dir, case.case_id, case.ending)
                predictor.predict_case(
                    case.files,
                    case.output_path(output_dir),
                    save_probabilities=save_probabilities,
                    prompt_labels=labels,
                    progress=window_progress(windows),
                    warn=warn,
                )
                written += 1
            except MaskSamError as error:
                tqdm.write(f"masksam: error: {error}", file=sys.stderr)
                failed.append(case.case_id)
    except KeyboardInterrupt:
        # Each output is written whole (temporary file, then rename), so the case in progress left nothing.
        raise Interrupted(
            f"{written} of {len(cases)} case(s) written to {output_dir}; run the same command with --continue "
            "to skip the cases already written"
        ) from None
    finally:
        windows.close()
    done = len(cases) - len(failed)
    print(f"wrote {done} of {len(cases)} case(s) to {output_dir} in {time.perf_counter() - started:.1f} s")
    if failed:
        names = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        raise MaskSamError(f"{len(failed)} of {len(cases)} case(s) failed ({names}); see the errors above")


def refinement_note(passes_per_fold: list[int]) -> str:
    """The progress line's note on refinement passes (e.g. ", 1 refinement pass"); "" without any."""
    if not any(passes_per_fold):
        return ""
    if len(set(passes_per_fold)) == 1:
        return f", {passes_per_fold[0]} refinement pass{'es' if passes_per_fold[0] > 1 else ''}"
    return f", refinement passes per fold {'/'.join(map(str, passes_per_fold))}"
