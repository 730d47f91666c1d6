"""U-Net model file: round trip, and one-line refusals of missing, damaged and foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference.builders import make_plans, save_tiny_checkpoint

from masksam.baselines.unet import UNet, UNetConfig
from masksam.baselines.unet_checkpoint import UNET_FORMAT, load_unet, unet_payload
from masksam.errors import CheckpointError
from masksam.inference.predictor import Predictor
from masksam.training.checkpoint import read_checkpoint, save_atomic

CONFIG = UNetConfig(
    patch_size=(2, 16, 16),
    in_channels=1,
    num_classes=3,
    channels=(4, 8, 8),
    kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 1, 1), (1, 2, 2), (1, 2, 2)),
)


def save_unet(path: Path, config: UNetConfig = CONFIG, **changes) -> tuple[UNet, Path]:
    torch.manual_seed(0)
    model = UNet(config)
    payload = {**unet_payload(model, make_plans()), **changes}
    save_atomic(payload, path)
    return model, path


def test_model_file_rebuilds_the_network(tmp_path):
    model, path = save_unet(tmp_path / "unet.pt")
    loaded = load_unet(path)
    assert not loaded.model.training
    assert loaded.model.config == CONFIG and loaded.plans == make_plans()
    patches = torch.randn(2, 1, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(patches), model.eval()(patches), rtol=0, atol=0)


def write_garbage(path: Path) -> Path:
    path.write_bytes(b"definitely not a torch file")
    return path


def write_truncated(path: Path) -> Path:
    _, full = save_unet(path.with_name("full.pt"))
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path


def write_state_dict(path: Path) -> Path:
    torch.save(UNet(CONFIG).state_dict(), path)
    return path


def write_masksam(path: Path) -> Path:
    return save_tiny_checkpoint(path.parent / "masksam", make_plans())


def write_future_version(path: Path) -> Path:
    return save_unet(path, version=99)[1]


def write_other_weights(path: Path) -> Path:
    wider = UNetConfig(**{**CONFIG.to_dict(), "channels": (8, 16, 16)})
    _, path = save_unet(path, wider)
    payload = torch.load(path, weights_only=True)
    payload["unet_config"] = CONFIG.to_dict()  # config says 4/8/8 channels, weights have 8/16/16
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(lambda path: path, "not found", id="missing"),
        pytest.param(write_garbage, "not readable as a U-Net baseline model file", id="garbage"),
        pytest.param(write_truncated, "not readable as a U-Net baseline model file", id="truncated"),
        pytest.param(write_state_dict, f"no '{UNET_FORMAT}' tag", id="bare_state_dict"),
        pytest.param(write_masksam, "is a MaskSAM checkpoint", id="masksam_checkpoint"),
        pytest.param(write_future_version, "format version 99", id="other_version"),
        pytest.param(write_other_weights, "weights do not fit", id="weights_of_another_unet"),
    ],
)
def test_unusable_files_give_one_line(tmp_path, write, message):
    path = write(tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as caught:
        load_unet(path)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def test_masksam_readers_send_a_unet_file_to_its_predictor(tmp_path):
    _, path = save_unet(tmp_path / "fold_0" / "checkpoint_final.pt")
    expected = "is a U-Net baseline model file, not a MaskSAM checkpoint; predict with masksam.baselines.predict_unet"
    for read in (read_checkpoint, lambda file: Predictor.from_checkpoints([file])):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        assert str(caught.value) == f"{path}: {expected}"
