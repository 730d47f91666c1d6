"""`masksam demo` end to end with the tiny backbone and a short budget: every promised file appears, and the
held-out Dice beats chance clearly (an empty or random prediction scores about 0)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
from data.dataset_builders import planned_synthetic_dataset
from rich.console import Console
from training.fake_clock import FakeClock, on_fake_clock

from masksam.cli import demo_command
from masksam.data.plans import Plans
from masksam.training.config import TrainingConfig
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer


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


def test_lite_medsam_is_trained_on_a_cpu_only_when_the_budget_holds_enough_of_its_steps(tmp_path, monkeypatch):
    """A probe of 1 s steps (a tiny model on a fake clock stands in for LiteMedSAM): about 3 minutes hold well over
    DEMO_MIN_LITE_MEDSAM_STEPS of them, half a minute far fewer, planned as the demo's budgeted run plans them."""
    _, plans_dir = planned_synthetic_dataset(tmp_path / "data")
    plans = Plans.load(plans_dir)
    probe = Trainer(
        model_config=replace(model_config_for(plans, backbone="tiny"), patch_size=(2, 64, 64)),
        training_config=TrainingConfig(
            epochs=100, iterations_per_epoch=50, validation_patches=4, num_workers=0, threads=1, seed=0
        ),
        plans=plans,
        plans_dir=plans_dir,
        output_dir=tmp_path / "probe",
        backbone_checkpoint=None,
        show_progress=False,
    )
    clock = FakeClock()
    on_fake_clock(probe, clock, monkeypatch)
    monkeypatch.setattr(demo_command, "time", SimpleNamespace(monotonic=clock))
    said = io.StringIO()
    console = Console(file=said, width=300)
    assert demo_command._lite_medsam_fits(probe, clock.now + 200.0, console)
    assert not demo_command._lite_medsam_fits(probe, clock.now + 30.0, console)
    lines = said.getvalue().splitlines()
    assert "a LiteMedSAM step takes 1.0 s here, so 3.3 minutes hold" in lines[0] and "training LiteMedSAM" in lines[0]
    assert "training tiny from scratch instead" in lines[1]


@pytest.mark.slow
def test_on_a_cpu_a_short_budget_probes_lite_medsam_and_falls_back_to_tiny(tmp_path):
    """Half a minute holds far fewer than DEMO_MIN_LITE_MEDSAM_STEPS LiteMedSAM steps on any CPU: the demo times
    them, says so, trains tiny, and leaves no trace of the probe."""
    from masksam.backbones.weights import find_cached_weights

    if find_cached_weights("lite_medsam") is None:
        pytest.skip("needs `masksam weights lite_medsam` (CI fetches it)")
    output = tmp_path / "demo"
    command = [sys.executable, "-m", "masksam", "demo", "-o", str(output), "--minutes", "0.5", "--no-reference"]
    result = subprocess.run(command + ["--device", "cpu"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stdout.split())  # rich wraps long lines
    assert "a LiteMedSAM step takes" in said and "training tiny from scratch instead" in said
    assert "MaskSAM on tiny" in said and "MaskSAM (tiny) on the held-out phantoms" in said
    assert not (output / "step_probe").exists() and (output / "model" / "fold_0" / "checkpoint_final.pt").is_file()
