"""Training on a CUDA GPU: AMP steps in bf16 and in fp16 with its GradScaler, an fp16 overflow skipped, a whole
fit with its checkpoints, pinned batches, targets built without host syncs, TinyViT attention past 65,535 windows.

These need a GPU and skip without one (the CPU tests show the same rules with mocked devices).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from masksam.data.plans import Plans
from masksam.data.targets import build_class_slot_targets, build_targets
from masksam.training import checkpoint as ckpt
from masksam.training.config import TrainingConfig
from masksam.training.distributed import DistributedContext
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible"),
]

FAST = TrainingConfig(epochs=2, iterations_per_epoch=3, validation_patches=2, num_workers=0, final_validation=False)


def older_than_ampere() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0)


AMP = [
    pytest.param("bf16", marks=pytest.mark.skipif("older_than_ampere()", reason="this GPU has no native bf16")),
    pytest.param("fp16"),
]


def cuda_trainer(planned_dataset, output: Path, config: TrainingConfig = FAST, **model_overrides) -> Trainer:
    _, plans_dir = planned_dataset
    plans = Plans.load(plans_dir)
    queries = "matched" if "num_queries" in model_overrides else "class_slots"
    model_config = replace(model_config_for(plans, backbone="tiny", queries=queries), **model_overrides)
    return Trainer(
        model_config=replace(model_config, patch_size=(2, 64, 64)),
        training_config=config,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=output,
        backbone_checkpoint=None,
        context=DistributedContext(device=torch.device("cuda", 0)),
        show_progress=False,
    )


def trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("amp", AMP)
def test_amp_steps_train_float32_weights(planned_dataset, amp: str) -> None:
    trainer = cuda_trainer(planned_dataset, Path("unused"), replace(FAST, amp=amp), num_queries=4)
    assert trainer.precision.name == amp and trainer.scaler.is_enabled() is (amp == "fp16")
    assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    image, label = next(iter(trainer.build_loader(epoch=0)))
    assert image.is_pinned() and label.dtype == torch.uint8
    before = trainable(trainer)
    losses = [float(trainer.train_step(image, label)["total"]) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses), losses
    after = trainable(trainer)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_an_fp16_overflow_skips_the_step(planned_dataset) -> None:
    trainer = cuda_trainer(planned_dataset, Path("unused"), replace(FAST, amp="fp16"), num_queries=4)
    image, label = next(iter(trainer.build_loader(epoch=0)))
    network, scale, before = trainer.network, trainer.scaler.get_scale(), trainable(trainer)

    def overflowing(*args, **kwargs):
        output = network(*args, **kwargs)
        output.mask_logits = output.mask_logits * float("inf")
        return output

    trainer.network = overflowing
    assert not math.isfinite(float(trainer.train_step(image, label)["total"]))
    after = trainable(trainer)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert trainer.scaler.get_scale() == scale / 2


@pytest.mark.parametrize("amp", AMP)
def test_a_fit_on_the_gpu_writes_checkpoints_that_resume_in_another_precision(planned_dataset, tmp_path, amp) -> None:
    other = "fp16" if amp == "bf16" else "off"
    first = cuda_trainer(planned_dataset, tmp_path / "model", replace(FAST, amp=amp))
    first.fit(stop_after_epochs=1)
    payload = ckpt.read_checkpoint(first.fold_dir / "checkpoint_latest.pt")
    assert len(payload["rng"]["cuda"]) == torch.cuda.device_count()
    resumed = cuda_trainer(planned_dataset, tmp_path / "model", replace(FAST, amp=other))
    state = resumed.fit(resume=True)
    assert state.epoch == 2 and all(math.isfinite(record["train_loss"]) for record in state.history)
    model = ckpt.load_trained_model(first.fold_dir / "checkpoint_final.pt", device="cuda")
    assert next(model.model.parameters()).is_cuda


def test_targets_of_gpu_labels_need_no_host_sync() -> None:
    labels = torch.randint(0, 4, (2, 3, 32, 32), device="cuda", dtype=torch.uint8)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        slots = build_class_slot_targets(labels, num_classes=4)
        segments = build_targets(labels, num_classes=4, num_queries=4)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = build_class_slot_targets(labels.cpu(), num_classes=4)
    assert torch.equal(slots.masks.cpu(), cpu.masks) and torch.equal(slots.boxes.cpu(), cpu.boxes)
    assert segments.masks.shape == (6, 4, 32, 32)


def test_tiny_vit_attention_past_65535_windows() -> None:
    from masksam.backbones.tiny_vit import Attention

    torch.manual_seed(0)
    attention = Attention(dim=16, key_dim=16, num_heads=1, window_resolution=(7, 7)).cuda()
    windows = torch.randn(70_000, 49, 16, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        everything = attention(windows)
        first = attention(windows[:1000])
    assert torch.isfinite(everything).all()
    torch.testing.assert_close(everything[:1000], first)
