"""Builders of the inference tests: plans, stub models with known outputs, tiny checkpoints, NIfTI cases.

Imported as ``from inference.builders import ...`` (``tests`` is on the import path, see pyproject.toml).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from masksam.data.plans import NormalizationPlan, Plans
from masksam.model.config import MaskSamConfig, preset_config
from masksam.model.masksam import MaskSamOutput, build_masksam
from masksam.training.checkpoint import BackboneSource, TrainedModel, model_payload, save_atomic

TINY_PATCH = (2, 64, 64)


def make_plans(
    *,
    num_channels: int = 1,
    num_classes: int = 3,
    transpose: tuple[int, int, int] = (2, 0, 1),
    target_spacing: tuple[float, float, float] = (6.0, 1.5, 1.5),
    anisotropic: bool = True,
    scheme: str = "zscore",
) -> Plans:
    """Plans as ``masksam plan`` writes them for a small MRI-like dataset (spacing in (T, H, W) order)."""
    return Plans(
        dataset_name="Synthetic",
        channel_names={str(c): f"MRI{c}" for c in range(num_channels)},
        labels={"background": 0, **{f"class{c}": c for c in range(1, num_classes)}},
        num_classes=num_classes,
        file_ending=".nii.gz",
        transpose=transpose,
        original_median_spacing=(1.5, 1.5, 6.0),
        original_median_shape=(40, 36, 8),
        target_spacing=target_spacing,
        anisotropic=anisotropic,
        median_shape=(8, 40, 36),
        normalization=tuple(NormalizationPlan(scheme) for _ in range(num_channels)),
        patch_size=TINY_PATCH,
        num_queries=4,
    )


def tiny_config(plans: Plans, **overrides) -> MaskSamConfig:
    """The tiny preset with the plans' channels and classes."""
    return preset_config("tiny", in_channels=plans.num_channels, num_classes=plans.num_classes, **overrides)


class PointwiseStub(nn.Module):
    """A stand-in for MaskSAM whose masks depend only on each voxel's (channel-mean) intensity.

    Query q predicts class ``q % K`` with certainty ``certainty``; its mask logit is
    ``scale · (1 - (x - centre_q)²)`` with centres spread over [-1.5, 1.5]. Pointwise in space, so it is
    mirror-, permutation- and window-equivariant by construction.
    """

    def __init__(self, config: MaskSamConfig, *, certainty: float = 6.0, scale: float = 4.0, shift: float = 0.0):
        super().__init__()
        self.config = config
        self.certainty, self.scale, self.shift = certainty, scale, shift

    def forward(self, volume: torch.Tensor, refinement_passes: int = 0) -> MaskSamOutput:
        """MaskSAM's signature; a pointwise stub has no decoder to refine with (``refinement_passes`` unused)."""
        batch, _, slices, height, width = volume.shape
        num_queries, num_classes = self.config.num_queries, self.config.num_classes
        intensity = volume.float().mean(dim=1)  # (B, T, H, W)
        centres = torch.linspace(-1.5, 1.5, num_queries) + self.shift  # (N,)
        masks = self.scale * (1 - (intensity[:, :, None] - centres[None, None, :, None, None]) ** 2)  # (B, T, N, H, W)
        class_logits = torch.zeros(num_queries, num_classes + 1)
        class_logits[torch.arange(num_queries), torch.arange(num_queries) % num_classes] = self.certainty
        class_logits = class_logits.expand(batch * slices, -1, -1)  # (B*T, N, K+1)
        zeros = torch.zeros(batch * slices, num_queries, 4)
        mask_logits = masks.reshape(batch * slices, num_queries, height, width)  # (B*T, N, H, W)
        return MaskSamOutput(class_logits, mask_logits, mask_logits, zeros, zeros)


def stub_model(plans: Plans, **kwargs) -> TrainedModel:
    """A TrainedModel wrapping a :class:`PointwiseStub` with the tiny patch."""
    return TrainedModel(
        model=PointwiseStub(tiny_config(plans), **kwargs).eval(), plans=plans, payload={}, path=Path("stub")
    )


def save_tiny_checkpoint(model_dir: Path, plans: Plans, *, fold: int = 0, name: str = "final", seed: int = 0) -> Path:
    """A loadable checkpoint of a randomly initialised tiny MaskSAM at ``MODEL_DIR/fold_F/checkpoint_NAME.pt``."""
    torch.manual_seed(seed)
    model = build_masksam(tiny_config(plans))
    path = Path(model_dir) / f"fold_{fold}" / f"checkpoint_{name}.pt"
    save_atomic(model_payload(model, plans, BackboneSource(name="tiny")), path)
    return path


def synthetic_image(shape: tuple[int, int, int], seed: int = 0, border: tuple[int, int] = (2, 3)) -> np.ndarray:
    """(X, Y, Z) float32 image: zero border (cropped by preprocessing) around blobs of three intensities."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    image = 100 + 40 * (x**2 + y**2 < 0.3) + 80 * ((x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2 < 0.15)
    image = image + rng.normal(0, 5, shape)
    low, high = border
    image[:low], image[-high:] = 0, 0  # an asymmetric zero border along x
    image[:, :low] = 0
    return image.astype(np.float32)


def write_case(folder: Path, case_id: str, channels: list[np.ndarray], affine: np.ndarray, header=None) -> list[Path]:
    """Writes ``CASE_0000.nii.gz`` ... and returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, array in enumerate(channels):
        path = folder / f"{case_id}_{index:04d}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine, header=header), str(path))
        paths.append(path)
    return paths


def replace_plans(plans: Plans, **changes) -> Plans:
    return dataclasses.replace(plans, **changes)


def planned_plans(root: Path, *, num_cases: int = 2, shape=(40, 36, 8), spacing=(1.5, 1.5, 6.0)) -> Plans:
    """Plans of a small synthetic nnU-Net raw dataset, planned by ``masksam plan``'s code (no cache)."""
    import json

    from masksam.data.pipeline import plan_and_preprocess

    dataset = Path(root) / "Dataset001_Synthetic"
    affine = np.diag([*spacing, 1.0])
    (dataset / "labelsTr").mkdir(parents=True)
    for index in range(num_cases):
        image = synthetic_image(shape, seed=index)
        label = np.zeros(shape, np.uint8)
        label[image > 130] = 1
        label[image > 200] = 2
        write_case(dataset / "imagesTr", f"case_{index:03d}", [image], affine)
        nib.save(nib.Nifti1Image(label, affine), str(dataset / "labelsTr" / f"case_{index:03d}.nii.gz"))
    description = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "class1": 1, "class2": 2},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "name": "Synthetic",
    }
    (dataset / "dataset.json").write_text(json.dumps(description))
    result = plan_and_preprocess(dataset, Path(root) / "plans", num_workers=0, preprocess=False, progress=False)
    return replace_plans(result.plans, patch_size=TINY_PATCH, num_queries=4)
