"""U-Net prediction through MaskSAM's Predictor: softmax scores, fold averaging, label maps with the inputs' headers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from data.dataset_builders import oblique_affine, synthetic_case, write_nifti
from inference.builders import save_tiny_checkpoint

from masksam.baselines.unet import UNet, UNetConfig
from masksam.baselines.unet_checkpoint import load_unet, unet_payload
from masksam.baselines.unet_inference import UNetPredictor, predict_unet
from masksam.data.plans import Plans
from masksam.errors import CheckpointError, ConfigError, DatasetError
from masksam.inference.sliding_window import sliding_window_scores
from masksam.training.checkpoint import save_atomic

CONFIG = UNetConfig(
    patch_size=(2, 32, 32),
    in_channels=1,
    num_classes=3,
    channels=(4, 8, 8),
    kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 1, 1), (1, 2, 2), (1, 2, 2)),
)
# nnU-Net's 2d configuration in small: single-slice patches, 2-D convolutions, deep supervision (one head).
CONFIG_2D = UNetConfig(
    patch_size=(1, 32, 32),
    in_channels=1,
    num_classes=3,
    channels=(4, 8, 8, 8),
    kernel_sizes=((1, 3, 3),) * 4,
    strides=((1, 1, 1),) + ((1, 2, 2),) * 3,
    configuration="2d",
    deep_supervision=True,
)
# Header fields a label map may change (data type, scaling, display range).
LABEL_FIELDS = {"datatype", "bitpix", "scl_slope", "scl_inter", "cal_min", "cal_max"}


def model_file(path: Path, plans_dir: Path, seed: int = 0, config: UNetConfig = CONFIG) -> Path:
    torch.manual_seed(seed)
    save_atomic(unet_payload(UNet(config), Plans.load(plans_dir)), path)
    return path


def header_differences(a, b) -> list[str]:
    def same(x: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.floating)))

    return [key for key in a.keys() if key not in LABEL_FIELDS and not same(a[key], b[key])]


@pytest.fixture
def images(tmp_path) -> Path:
    """Two cases on oblique grids of different shapes (the first with a header written by nibabel)."""
    folder = tmp_path / "images"
    for index, shape in enumerate([(40, 36, 8), (33, 45, 5)]):
        image, _ = synthetic_case(shape, seed=index)
        write_nifti(image, oblique_affine((1.4, 1.6, 7.0)), folder / f"case_{index:03d}_0000.nii.gz")
    return folder


def test_scores_are_fold_averaged_softmax_probabilities(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    paths = [model_file(tmp_path / f"fold{i}.pt", plans_dir, seed=i) for i in range(2)]
    predictor = UNetPredictor.from_checkpoints(paths, tta=False)
    patches = torch.randn(3, 1, 2, 32, 32)
    with torch.no_grad():
        scores = predictor.score_patches(patches)
        expected = sum(load_unet(path).model(patches).softmax(dim=1) for path in paths) / 2
    assert scores.shape == (3, 3, 2, 32, 32)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(3, 2, 32, 32))


@pytest.mark.parametrize("config", [pytest.param(CONFIG, id="3d_fullres"), pytest.param(CONFIG_2D, id="2d")])
@pytest.mark.parametrize("tta", [pytest.param(False, id="plain"), pytest.param(True, id="mirroring_tta")])
def test_predict_unet_writes_label_maps_with_the_inputs_geometry(planned_dataset, tmp_path, images, tta, config):
    _, plans_dir = planned_dataset
    path = model_file(tmp_path / "unet.pt", plans_dir, config=config)
    written = predict_unet(path, images, tmp_path / "predictions", tta=tta)
    assert [p.name for p in written] == ["case_000.nii.gz", "case_001.nii.gz"]
    predictor = UNetPredictor.from_checkpoints([path], tta=tta)
    for output in written:
        source = nib.load(str(images / output.name.replace(".nii.gz", "_0000.nii.gz")))
        result = nib.load(str(output))
        assert result.shape == source.shape
        np.testing.assert_array_equal(result.affine, source.affine)
        assert header_differences(source.header, result.header) == []
        labels = np.asarray(result.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2}
        expected = predictor.predict_array(np.asarray(source.dataobj, np.float32)[None], source.affine)
        np.testing.assert_array_equal(labels, expected)


def test_2d_model_scores_every_slice_on_its_own(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    predictor = UNetPredictor.from_checkpoints([model_file(tmp_path / "unet.pt", plans_dir, config=CONFIG_2D)])
    volume = torch.randn(1, 5, 40, 36)  # (C, T, H, W): 1-slice windows, padded and tiled in-plane
    whole = sliding_window_scores(volume, predictor.score_function(), num_classes=3, config=predictor.window)
    alone = sliding_window_scores(volume[:, 2:3], predictor.score_function(), num_classes=3, config=predictor.window)
    assert whole.shape == (3, 5, 40, 36)
    torch.testing.assert_close(whole[:, 2:3], alone)  # a slice's scores do not depend on its neighbours


def test_predict_unet_skip_existing_leaves_predicted_cases(planned_dataset, tmp_path, images):
    _, plans_dir = planned_dataset
    path = model_file(tmp_path / "unet.pt", plans_dir)
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "case_000.nii.gz").write_bytes(b"from an interrupted run")
    written = predict_unet(path, images, out, skip_existing=True)
    assert [p.name for p in written] == ["case_001.nii.gz"]
    assert (out / "case_000.nii.gz").read_bytes() == b"from an interrupted run"


def test_predict_unet_refuses_bad_folders_and_foreign_models(planned_dataset, tmp_path, images):
    _, plans_dir = planned_dataset
    path = model_file(tmp_path / "unet.pt", plans_dir)
    with pytest.raises(ConfigError, match="output folder is the input folder"):
        predict_unet(path, images, images)
    with pytest.raises(CheckpointError, match="is a MaskSAM checkpoint"):
        predict_unet(save_tiny_checkpoint(tmp_path / "masksam", Plans.load(plans_dir)), images, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no CASE_0000"):
        predict_unet(path, tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()
