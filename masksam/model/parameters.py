"""Tunable and frozen parameter counts per component of a MaskSAM model (paper Tab. 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class ParameterCount:
    tunable: int = 0
    frozen: int = 0

    @property
    def total(self) -> int:
        return self.tunable + self.frozen


@dataclass
class ParameterReport:
    """Counts per top-level component, and their sums."""

    components: dict[str, ParameterCount] = field(default_factory=dict)

    @property
    def tunable(self) -> int:
        return sum(c.tunable for c in self.components.values())

    @property
    def frozen(self) -> int:
        return sum(c.frozen for c in self.components.values())

    @property
    def total(self) -> int:
        return self.tunable + self.frozen

    def to_dict(self) -> dict[str, object]:
        return {
            "tunable": self.tunable,
            "frozen": self.frozen,
            "total": self.total,
            "components": {
                name: {"tunable": c.tunable, "frozen": c.frozen, "total": c.total}
                for name, c in self.components.items()
            },
        }


def count_parameters(model: nn.Module) -> ParameterReport:
    """Count each parameter once (shared tensors are not counted twice), grouped by top-level child."""
    report = ParameterReport()
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        component = report.components.setdefault(name.split(".", 1)[0], ParameterCount())
        if parameter.requires_grad:
            component.tunable += parameter.numel()
        else:
            component.frozen += parameter.numel()
    return report
