"""`masksam demo` end to end with the tiny backbone and a short budget: every promised file appears, and the
held-out Dice beats chance clearly (an empty or random prediction scores about 0)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_writes_everything_it_promises(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "masksam",
            "demo",
            "-o",
            str(output),
            "--backbone",
            "tiny",
            "--minutes",
            "1.5",
            "--no-reference",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fold = output / "model" / "fold_0"
    for path in (fold / "progress.png", fold / "checkpoint_final.pt", output / "predictions" / "summary.json"):
        assert path.stat().st_size > 0, path
    assert len(list((output / "predictions").glob("phantom_*.nii.gz"))) == 4
    assert len(list((output / "pictures").glob("*.png"))) == 2
    summary = json.loads((output / "predictions" / "summary.json").read_text())
    assert {item["name"] for item in summary["mean"].values()} == {"RV", "MYO", "LV"}
    assert "mean" in result.stdout and "Where things are" in result.stdout
    # 4 minutes (the default) give ~0.7 here; 1.5 minutes ~0.55, less on a busy machine.
    assert summary["foreground_mean"]["Dice"] > 0.25, summary["foreground_mean"]
