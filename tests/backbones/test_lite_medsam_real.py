"""End-to-end check of our SAM parts with the real LiteMedSAM weights on a real ACDC slice.

Zero-shot LiteMedSAM prompted with the ground-truth box of the left ventricle (a convex blob) must
segment it well; this fails if any part of the image encoder, prompt encoder or decoder is wrong.
Skipped unless `masksam weights lite_medsam` has been run and ../shared/data is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED

from masksam.backbones.sam import build_backbone, load_backbone_weights
from masksam.backbones.weights import find_cached_weights

CASES = ["patient001_frame01", "patient030_frame01"]
LEFT_VENTRICLE = 3


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_box_prompted_left_ventricle(case: str) -> None:
    nibabel = pytest.importorskip("nibabel")
    weights = find_cached_weights("lite_medsam")
    folder = SHARED / "data" / "Dataset027_ACDC"
    if weights is None or not folder.is_dir():
        pytest.skip("needs `masksam weights lite_medsam` and ../shared/data/Dataset027_ACDC")
    backbone = load_backbone_weights(build_backbone("lite_medsam"), weights)
    image = nibabel.load(folder / "imagesTr" / f"{case}_0000.nii.gz").get_fdata()
    label = nibabel.load(folder / "labelsTr" / f"{case}.nii.gz").get_fdata()
    middle = image.shape[2] // 2
    slice_ = torch.tensor(image[:, :, middle], dtype=torch.float32)
    slice_ = (slice_ - slice_.min()) / (slice_.max() - slice_.min())  # LiteMedSAM expects [0, 1] images
    rgb = F.interpolate(slice_[None, None], size=(256, 256), mode="bilinear").expand(1, 3, 256, 256)
    target = F.interpolate(torch.tensor(label[:, :, middle])[None, None], size=(256, 256), mode="nearest")[0, 0]
    target = target == LEFT_VENTRICLE
    rows, cols = torch.nonzero(target, as_tuple=True)
    box = torch.tensor([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=torch.float32)
    with torch.no_grad():
        sparse, dense = backbone.prompt_encoder(boxes=box)
        masks, _ = backbone.mask_decoder(
            backbone.image_encoder(rgb), backbone.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
    predicted = masks[0, 0] > 0  # LiteMedSAM's low-resolution masks are already 256×256
    dice = 2 * (predicted & target).sum() / (predicted.sum() + target.sum())
    assert dice > 0.9
