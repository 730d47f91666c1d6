"""Checkpoints of models whose frozen SAM comes from an official weights file (every LiteMedSAM and ViT model):
saved without the frozen weights, rebuilt from the recorded file (or an identical one), found in the weights cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from helpers import official_shapes, state_dict_from_shapes
from inference.builders import make_plans, tiny_config

from masksam.backbones.sam import build_backbone
from masksam.errors import CheckpointError
from masksam.model.masksam import build_masksam
from masksam.model_files import masksam_checkpoint
from masksam.training import checkpoint as ckpt


def official_weights(name: str, path: Path, seed: int) -> Path:
    """A weights file in the official format (SAM's keys and shapes, a plain state dict) with random values."""
    if name == "lite_medsam":
        state = state_dict_from_shapes(official_shapes("lite_medsam_state_dict_shapes.json"), seed=seed)
    else:
        shapes = {key: list(value.shape) for key, value in build_backbone(name).state_dict().items()}
        state = state_dict_from_shapes(shapes, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def trained_on_file(name: str, weights: Path, checkpoint: Path) -> torch.nn.Module:
    """A model on the frozen ``weights`` with its trainable weights moved off their initial values, saved as a
    training checkpoint would save it (the frozen part referenced by path and sha256)."""
    plans = make_plans()
    config = tiny_config(plans, backbone=name)
    torch.manual_seed(0)
    model = build_masksam(config, weights)
    trainable, _ = ckpt.split_state(model)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key in trainable and value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))  # as training would: differs from a fresh build
    ckpt.save_atomic(ckpt.model_payload(model, plans, ckpt.BackboneSource.from_file(name, weights)), checkpoint)
    return model


BACKBONES = [
    pytest.param("tiny", id="tiny-from-file"),
    pytest.param("lite_medsam", id="lite_medsam", marks=pytest.mark.slow),  # about 5 s: two 10M-parameter builds
]


@pytest.mark.parametrize("name", BACKBONES)
def test_frozen_backbone_from_a_file_is_referenced_and_rebuilt_from_it(tmp_path: Path, name: str) -> None:
    weights = official_weights(name, tmp_path / "weights" / f"{name}.pth", seed=1)
    checkpoint = tmp_path / "model" / "fold_0" / "checkpoint_final.pt"
    model = trained_on_file(name, weights, checkpoint)

    payload = ckpt.read_checkpoint(checkpoint)
    assert payload["backbone_source"] == {
        "name": name,
        "path": str(weights.resolve()),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert payload["frozen_state"] is None  # referenced, not copied
    frozen_keys = set(ckpt.split_state(model)[1])
    assert frozen_keys and not frozen_keys & set(payload["trainable_state"])

    loaded = ckpt.load_trained_model(checkpoint)
    expected, actual = model.state_dict(), loaded.model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:  # the trained weights from the checkpoint, the frozen ones from the file
        assert torch.equal(expected[key], actual[key]), key
    official = torch.load(weights, map_location="cpu", weights_only=True)
    encoder_key = next(key for key in frozen_keys if key.startswith("image_encoder."))
    assert any(torch.equal(actual[encoder_key], value) for value in official.values())


def test_an_identical_copy_of_the_weights_elsewhere_is_accepted(tmp_path: Path) -> None:
    weights = official_weights("tiny", tmp_path / "weights" / "tiny.pth", seed=1)
    checkpoint = tmp_path / "model" / "checkpoint_final.pt"
    model = trained_on_file("tiny", weights, checkpoint)
    copy = tmp_path / "elsewhere" / "renamed.pth"
    copy.parent.mkdir()
    shutil.copyfile(weights, copy)
    weights.unlink()
    loaded = ckpt.load_trained_model(checkpoint, backbone_checkpoint=copy)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_a_missing_recorded_file_is_found_in_the_weights_cache_by_its_sha256(tmp_path: Path, monkeypatch) -> None:
    weights = official_weights("tiny", tmp_path / "weights" / "tiny.pth", seed=1)
    checkpoint = tmp_path / "model" / "checkpoint_final.pt"
    model = trained_on_file("tiny", weights, checkpoint)
    cached = tmp_path / "cache" / "tiny.pth"
    cached.parent.mkdir()
    shutil.move(weights, cached)
    monkeypatch.setattr(masksam_checkpoint, "find_cached_weights", lambda name: cached)
    loaded = ckpt.load_trained_model(checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    official_weights("tiny", cached, seed=2)  # the cache now holds other weights: not these
    with pytest.raises(CheckpointError, match="are missing on this machine"):
        ckpt.load_trained_model(checkpoint)


@pytest.mark.parametrize("given", ["recorded-file-replaced", "backbone-checkpoint-option"])
def test_a_backbone_file_with_another_sha256_is_refused(tmp_path: Path, given: str) -> None:
    """Other weights of the same architecture load strictly, so only the sha256 tells that the trained adapters
    and heads would sit on a frozen backbone they were not trained with."""
    weights = official_weights("tiny", tmp_path / "weights" / "tiny.pth", seed=1)
    trained_with = hashlib.sha256(weights.read_bytes()).hexdigest()
    checkpoint = tmp_path / "model" / "fold_0" / "checkpoint_final.pt"
    trained_on_file("tiny", weights, checkpoint)
    if given == "recorded-file-replaced":
        other, override = official_weights("tiny", weights, seed=2), None  # same path and shapes, other values
    else:
        other = override = official_weights("tiny", tmp_path / "elsewhere" / "tiny.pth", seed=2)
    found = hashlib.sha256(other.read_bytes()).hexdigest()
    assert found != trained_with
    with pytest.raises(CheckpointError) as error:
        ckpt.load_trained_model(checkpoint, backbone_checkpoint=override)
    assert str(error.value) == (
        f"{checkpoint}: was trained on frozen tiny weights with sha256 {trained_with[:16]}…, but "
        f"{other.resolve() if override is None else other} has sha256 {found[:16]}… (other weights); pass the file "
        "it was trained with (predict: --backbone-checkpoint; train --continue: --checkpoint)"
    )


@pytest.mark.slow
def test_a_replaced_recorded_file_gives_way_to_the_right_weights_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    weights = official_weights("tiny", tmp_path / "weights" / "tiny.pth", seed=1)
    checkpoint = tmp_path / "model" / "checkpoint_final.pt"
    model = trained_on_file("tiny", weights, checkpoint)
    cached = tmp_path / "cache" / "tiny.pth"
    cached.parent.mkdir()
    shutil.copyfile(weights, cached)
    monkeypatch.setattr(masksam_checkpoint, "find_cached_weights", lambda name: cached)
    official_weights("tiny", weights, seed=2)  # the recorded path now holds other weights
    loaded = ckpt.load_trained_model(checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
