"""Prediction on a CUDA GPU under autocast (bf16 from compute capability 8.0, fp16 before): the scores match the
CPU's float32 ones closely. Needs a GPU; skips without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference.builders import make_plans, save_tiny_checkpoint, synthetic_image

from masksam.inference.predictor import Predictor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible"),
]


@pytest.mark.parametrize("amp", ["auto", "fp16", "off"])
def test_cuda_prediction_under_autocast_matches_the_cpu(tmp_path, amp: str) -> None:
    plans = make_plans()
    path = save_tiny_checkpoint(tmp_path / "model", plans)
    gpu = Predictor.from_checkpoints([path], device="cuda", tta=False, amp=amp)
    cpu = Predictor.from_checkpoints([path], device="cpu", tta=False, amp="off")
    expected = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    assert gpu.precision.name == {"auto": expected, "fp16": "fp16", "off": "fp32"}[amp]
    seen = []

    def record(module, args):
        seen.append(torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None)

    gpu.models[0].register_forward_pre_hook(record)
    patches = torch.from_numpy(synthetic_image((64, 64, 2)).transpose(2, 0, 1).astype(np.float32))[None, None]
    patches = (patches - patches.mean()) / patches.std()  # (1, 1, 2, 64, 64)
    on_gpu = gpu.score_patches(patches.cuda())
    assert seen == [gpu.precision.dtype] and on_gpu.dtype == torch.float32
    on_cpu = cpu.score_patches(patches)
    assert torch.isfinite(on_gpu).all()
    difference = (on_gpu.cpu() - on_cpu).abs()
    assert difference.mean() < 0.03, (difference.mean(), difference.max())

    image = synthetic_image((40, 36, 8))
    prediction = gpu.predict(image[None], np.diag([1.5, 1.5, 6.0, 1.0]))
    reference = cpu.predict(image[None], np.diag([1.5, 1.5, 6.0, 1.0]))
    assert prediction.labels.shape == reference.labels.shape == (40, 36, 8)
    assert (prediction.labels == reference.labels).mean() > 0.9
