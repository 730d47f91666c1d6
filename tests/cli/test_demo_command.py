"""`masksam demo` end to end with the tiny backbone and a very short budget: every promised file appears."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_writes_everything_it_promises(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "masksam", "demo", "-o", str(output), "--backbone", "tiny", "--minutes", "0.3"],
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
