"""Layers: model files sit below training and inference; inference reads model files without importing training
or the baselines (each checked in a fresh interpreter, where nothing else has imported them yet)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def modules_imported_by(module: str) -> set[str]:
    """Every ``masksam.*`` module a fresh interpreter holds after ``import module``."""
    program = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.startswith('masksam'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def under(names: set[str], *packages: str) -> list[str]:
    return sorted(name for name in names if name.startswith(packages))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        pytest.param("masksam.inference", ("masksam.training", "masksam.baselines"), id="inference"),
        pytest.param(
            "masksam.model_files",
            ("masksam.training", "masksam.inference", "masksam.baselines", "masksam.cli"),
            id="model_files",
        ),
    ],
)
@pytest.mark.slow
def test_a_layer_imports_nothing_above_it(module: str, forbidden: tuple[str, ...]) -> None:
    imported = modules_imported_by(module)
    assert module in imported
    assert under(imported, *forbidden) == []
