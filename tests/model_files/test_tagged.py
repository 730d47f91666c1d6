"""Tagged model files: the tags of existing files, reading any model file by its tag, one-line refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from inference.builders import make_plans, save_tiny_checkpoint

from masksam.errors import CheckpointError
from masksam.model_files import (
    FORMATS,
    TrainedModel,
    file_format_of,
    load_model_file,
    read_checkpoint,
    register_loader,
    save_atomic,
    tagged,
)


def test_the_tags_of_existing_files_are_unchanged() -> None:
    # Files written before the model_files layer carry these tags and versions; changing them orphans every run.
    assert {tag: file_format.version for tag, file_format in FORMATS.items()} == {
        "masksam-training-checkpoint": 2,
        "masksam-unet-baseline": 1,
    }


def test_a_masksam_checkpoint_loads_by_its_tag(tmp_path: Path) -> None:
    path = save_tiny_checkpoint(tmp_path / "model", make_plans())
    loaded = load_model_file(path)
    assert isinstance(loaded, TrainedModel) and loaded.path == path and not loaded.model.training
    assert file_format_of(path).kind == "a MaskSAM checkpoint"
    assert read_checkpoint(path)["format"] == "masksam-training-checkpoint"


def test_a_unet_file_loads_by_its_tag_once_the_baselines_registered_their_loader(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    from masksam.baselines.unet import UNet, UNetConfig
    from masksam.baselines.unet_checkpoint import TrainedUNet, unet_payload

    config = UNetConfig(
        patch_size=(2, 16, 16),
        in_channels=1,
        num_classes=3,
        channels=(4, 8, 8),
        kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
        strides=((1, 1, 1), (1, 2, 2), (1, 2, 2)),
    )
    path = tmp_path / "unet.pt"
    save_atomic(unet_payload(UNet(config), make_plans()), path)
    loaded = load_model_file(path)
    assert isinstance(loaded, TrainedUNet) and loaded.model.config == config


def test_a_known_tag_without_its_loader_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(tagged._LOADERS, "masksam-unet-baseline", raising=False)  # as before importing baselines
    path = tmp_path / "unet.pt"
    save_atomic({"format": "masksam-unet-baseline", "version": 1}, path)
    with pytest.raises(CheckpointError) as caught:
        load_model_file(path)
    assert str(caught.value) == (
        f"{path}: is a U-Net baseline model file, whose loader is not registered (import its package first); "
        "predict with masksam.baselines.predict_unet"
    )


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        pytest.param({"format": "theirs", "version": 1}, "unknown format tag 'theirs'", id="unknown"),
        pytest.param({"weights": torch.zeros(2)}, "no format tag", id="untagged"),
        pytest.param([1, 2, 3], "no format tag", id="not_a_dict"),
    ],
)
def test_a_file_with_an_unknown_tag_is_refused_in_one_line_naming_it(tmp_path: Path, payload, found: str) -> None:
    path = tmp_path / "checkpoint_final.pt"
    if isinstance(payload, dict):
        save_atomic(payload, path)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as caught:
        load_model_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a masksam model file ({found}; ") and "\n" not in message
    assert "masksam-training-checkpoint" in message


def test_missing_and_damaged_files_are_one_line(tmp_path: Path) -> None:
    missing, damaged = tmp_path / "missing.pt", tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a torch file")
    for path, expected in ((missing, "model file not found"), (damaged, "not readable as a masksam model file")):
        with pytest.raises(CheckpointError) as caught:
            load_model_file(path)
        assert str(caught.value).startswith(f"{path}: {expected}") and "\n" not in str(caught.value)


def test_only_known_tags_take_a_loader() -> None:
    with pytest.raises(ValueError, match="unknown model file tag 'mine'"):
        register_loader("mine", lambda path, **options: None)
    with pytest.raises(ValueError, match="already has a loader"):
        register_loader("masksam-training-checkpoint", lambda path, **options: None)


def test_ctrl_c_while_a_checkpoint_is_written_stays_an_interrupt_and_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C inside torch's zip writer made its cleanup raise a RuntimeError ("unexpected pos") that hid the
    interrupt; the caller must see KeyboardInterrupt, the old file must stay as it was and no temporary be left."""
    path = tmp_path / "checkpoint_latest.pt"
    tagged.save_atomic({"step": 1}, path)
    before = path.read_bytes()

    class InterruptedFile(io.FileIO):
        """A file whose third write is interrupted, as a Ctrl-C while torch writes a storage."""

        writes = 0

        def write(self, data):
            InterruptedFile.writes += 1
            if InterruptedFile.writes == 3:
                raise KeyboardInterrupt
            return super().write(data)

    monkeypatch.setattr(tagged.os, "fdopen", lambda fd, mode: InterruptedFile(fd, "wb"))
    with pytest.raises(KeyboardInterrupt):
        tagged.save_atomic({"weights": torch.zeros(10_000), "more": torch.ones(100)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pt"]
