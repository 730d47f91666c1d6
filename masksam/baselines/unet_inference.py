"""Predicting with the baseline U-Net through MaskSAM's own inference path.

:class:`UNetPredictor` is a :class:`~masksam.inference.predictor.Predictor` whose windows are scored by U-Nets
(softmax class probabilities) instead of MaskSAM's semantic inference; preprocessing, the Gaussian sliding
window, mirroring TTA, fold averaging, restoring the file geometry and writing label maps are the Predictor's,
so both models' predictions go through exactly the same steps.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from masksam.baselines.unet_checkpoint import load_unet
from masksam.devices import resolve_device
from masksam.errors import ConfigError, DatasetError, MaskSamError
from masksam.inference.cases import find_prediction_cases
from masksam.inference.predictor import Predictor


class UNetPredictor(Predictor):
    """Predicts label maps with one or more trained U-Nets (fold ensemble: probabilities averaged).

    Construct with :meth:`from_checkpoints` (U-Net model files) or with
    :class:`~masksam.baselines.unet_checkpoint.TrainedUNet` objects; the other settings are the Predictor's.
    """

    # Float32 on every CPU under ``amp auto``, as the U-Net trainer (`UNetTrainer.cpu_auto_bf16`).
    cpu_auto_bf16 = False

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[Path],
        *,
        device: str | torch.device = "cpu",
        backbone_checkpoint: Path | None = None,
        **settings,
    ) -> UNetPredictor:
        """Loads one U-Net per model file and builds a predictor (``settings``: see ``Predictor.__init__``).

        Args:
            paths: U-Net model files (``checkpoint_final.pt`` of ``train_unet``).
            device: Where windows are scored (``"auto"``: CUDA if available).
            backbone_checkpoint: Must be None (a U-Net has no SAM backbone).

        Raises:
            CheckpointError: A file is missing, unreadable, not a U-Net, or inconsistent with the others.
            ConfigError: A backbone file was given, or MONAI is not installed.
        """
        if backbone_checkpoint is not None:
            raise ConfigError(f"{backbone_checkpoint}: a U-Net has no SAM backbone; leave the backbone checkpoint out")
        resolved = resolve_device(device)
        models = [load_unet(path, device=resolved) for path in paths]
        return cls(models, device=resolved, **settings)

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Fold-averaged softmax class probabilities of a batch of patches (no mirroring).

        Args:
            patches: (B, C, T, H, W) preprocessed patches on the predictor's device.

        Returns:
            (B, K, T, H, W) float32 probabilities.
        """
        total = None
        for model in self.models:
            with self.precision.autocast():
                logits = model(patches)  # (B, K, T, H, W)
            probabilities = logits.float().softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        return total / len(self.models)


def predict_unet(
    model_file: Path | Sequence[Path],
    images_dir: Path,
    output_dir: Path,
    *,
    tta: bool = False,
    device: str | torch.device = "cpu",
    step: float = 0.5,
    windows_per_batch: int = 4,
    show_progress: bool = False,
    skip_existing: bool = False,
) -> list[Path]:
    """Writes ``OUTPUT_DIR/CASE.nii.gz`` for every case of a folder, as ``masksam predict`` does.

    Each label map has the first input channel's grid and header (shape, affine, qform/sform). A case that
    cannot be predicted gets one error line on stderr and the others go on.

    Args:
        model_file: A U-Net model file, or several (one per fold) to ensemble.
        images_dir: Folder of ``CASE_XXXX.nii.gz`` files (one per channel).
        output_dir: Folder for the label maps (created); must not be ``images_dir``.
        tta: Average over mirrored copies of every window (in-plane axes: 4 copies).
        device: ``cpu``, ``cuda`` or ``auto``.
        step: Largest distance between windows as a fraction of the patch.
        windows_per_batch: Windows per forward pass.
        show_progress: Draw a progress bar over the cases.
        skip_existing: Leave cases whose label map is already in ``output_dir`` (resume an interrupted run).

    Returns:
        The label maps written in this call, in case order.

    Raises:
        CheckpointError: Unusable model file(s).
        ConfigError: The output folder is the input folder, or MONAI is missing.
        DatasetError: No cases in ``images_dir``.
        MaskSamError: Some cases failed (after the others were written).
    """
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: input folder not found; pass a folder of CASE_0000.nii.gz files")
    if output_dir.resolve() == images_dir.resolve():
        raise ConfigError(f"{output_dir}: the output folder is the input folder; choose another so inputs survive")
    paths = [Path(model_file)] if isinstance(model_file, (str, Path)) else [Path(p) for p in model_file]
    predictor = UNetPredictor.from_checkpoints(
        paths, device=device, step=step, tta=tta, windows_per_batch=windows_per_batch
    )
    cases, _ = find_prediction_cases(images_dir, num_channels=predictor.num_channels)
    if not cases:
        raise DatasetError(f"{images_dir}: no CASE_0000.nii.gz files; name inputs as nnU-Net does (CASE_XXXX.nii.gz)")
    written, failed = [], []
    for case in tqdm(cases, desc="predicting", unit="case", disable=not show_progress, file=sys.stderr):
        try:
            if case.problem is not None:
                raise DatasetError(case.problem)
            if skip_existing and case.is_predicted(output_dir):
                continue
            written += predictor.predict_case(case.files, case.output_path(output_dir))
        except MaskSamError as error:
            print(f"masksam: error: {error}", file=sys.stderr)
            failed.append(case.case_id)
    if failed:
        names = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        raise MaskSamError(f"{len(failed)} of {len(cases)} case(s) failed ({names}); see the errors above")
    return written
