"""The `masksam` command line: help everywhere, params/forward output, one-line errors with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from masksam.cli import app

runner = CliRunner()
COMMANDS = ["forward", "params", "weights", "plan", "train", "predict", "evaluate", "show", "demo"]


def masksam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masksam", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_params_json_for_the_paper_setting() -> None:
    """Paper Tab. 5: ~14M tunable over ViT-B; the frozen ViT-B SAM has 93.7M parameters."""
    result = runner.invoke(app, ["params", "--backbone", "vit_b", "--preset", "acdc", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert isinstance(report["tunable"], int) and isinstance(report["total"], int)
    assert 10_000_000 <= report["tunable"] <= 25_000_000
    assert report["frozen"] == 93_735_472
    assert report["total"] == report["tunable"] + report["frozen"]
    assert report["components"]["prompt_encoder"]["tunable"] == 0


def test_params_table() -> None:
    result = runner.invoke(app, ["params", "--backbone", "tiny", "--preset", "tiny"])
    assert result.exit_code == 0
    assert "prompt_generator" in result.output and "all" in result.output


def test_forward_prints_a_summary() -> None:
    result = runner.invoke(app, ["forward", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "class_logits" in result.output and "4×4×4" in result.output and "forward time" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["params", "--backbone", "vit_x"], "unknown backbone 'vit_x'", id="backbone"),
        # The same console-script start (4-8 s here) for each: one case in the fast suite, the others slow.
        pytest.param(["params", "--preset", "brats"], "unknown preset 'brats'", id="preset", marks=pytest.mark.slow),
        pytest.param(
            ["params", "--backbone", "tiny", "--checkpoint", "missing.pth"],
            "missing.pth: no such weights",
            id="file",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_errors_are_one_line_with_exit_code_1(args: list[str], message: str) -> None:
    result = masksam(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
