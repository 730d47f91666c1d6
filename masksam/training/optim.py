"""Optimiser and the poly learning-rate schedule (nnU-Net's), stepped once per iteration."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from masksam.training.config import TrainingConfig

# Trainable parameters that sit outside SAM's blocks although their names start with a SAM part's name.
_BESIDE_SAM = ("mask_decoder.global_classifier_tokens.", "mask_decoder.class_head.")
_INSIDE_SAM = ("image_encoder.", "mask_decoder.", "prompt_encoder.")


def parameter_groups(model: nn.Module, config: TrainingConfig) -> list[dict]:
    """Two optimiser groups: what prompts and classifies (at ``learning_rate``) and what sits inside SAM
    (adapters, depth tables, SAM's own weights when trained; at ``learning_rate × adapter_lr_scale``).
    Empty groups are left out; each group is named (``name``) for the log."""
    inside, beside = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        in_sam = name.startswith(_INSIDE_SAM) and not name.startswith(_BESIDE_SAM)
        (inside if in_sam else beside).append(parameter)
    groups = [
        {"name": "prompting", "params": beside, "lr": config.learning_rate},
        {"name": "inside_sam", "params": inside, "lr": config.learning_rate * config.adapter_lr_scale},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(parameters: Iterable[nn.Parameter] | list[dict], config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum as nnU-Net, over the trainable parameters or parameter groups."""
    parameters = list(parameters)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def poly_factor(step: int, total_steps: int, exponent: float, warmup_steps: int = 0) -> float:
    """(1 - step / total) ** exponent, never below 0 (steps past the end keep lr at 0), times a linear
    warm-up (step + 1) / warmup_steps over the first ``warmup_steps`` steps."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warmup * max(0.0, 1.0 - step / max(total_steps, 1)) ** exponent


class PolyLR(torch.optim.lr_scheduler.LRScheduler):
    """lr = initial lr × poly_factor(step) per group; ``total_steps`` can be re-planned (time budgets) and is saved."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, total_steps: int, exponent: float, warmup_steps: int = 0
    ) -> None:
        self.total_steps = total_steps
        self.exponent = exponent
        self.warmup_steps = warmup_steps
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = poly_factor(self.last_epoch, self.total_steps, self.exponent, self.warmup_steps)
        return [base * factor for base in self.base_lrs]

    def set_total_steps(self, total_steps: int) -> None:
        """Re-plans the schedule's length and applies the learning rate of the current step at once."""
        self.total_steps = total_steps
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
