"""Learning-curve study: fold-0 pseudo-Dice against training minutes, the old recipe and each remedy in turn.

Every recipe is one ``masksam train`` run on the same plans, fold, seed and wall-clock budget (DESIGN §10); the
curve is the mean foreground pseudo-Dice of the fixed validation patches (16 patches of the fold's validation
cases, scored every epoch with the model's own generated prompts) against the minutes of training so far, read
from each run's ``metrics.csv``. Recipes are cumulative, in the order of issue 13, all at 128² (the
``masksam train`` default, a quarter of 256²'s step cost) so that side-by-side runs fit in memory:

- ``fidelity``: today's model with the paper's training recipe (the step-0 fidelity fixes, and the auxiliary
  masks' foreground-prior start, are not switches): N = 8 matched queries with a background segment, starting
  boxes spread over the image, no denoising, one learning rate (1e-3), no warm-up, auxiliary masks weighted 0.5,
  the paper's box rule (mean of the learned box and the box of the whole auxiliary mask);
- ``denoising``: + one group of prompt-denoising queries per class;
- ``class_slots``: + one query per foreground class (no matching), boxes starting at each class's typical box;
- ``optimiser``: + parameter groups (lr 2e-3, adapters inside SAM at half of it), 20 warm-up steps, auxiliary
  masks weighted 1.5, encoder adapters paused for the first half of the steps (cheaper steps);
- ``largest_component``: + box prompts from the auxiliary masks' largest connected component alone (the
  ``masksam train`` defaults);
- ``fidelity_256``: the paper recipe at 256², to show what the smaller input buys on the same budget.

A LiteMedSAM run at 256² takes about 13 GB: two of them do not fit side by side in 24 GB, one beside a 128²
run does.

Runs can go side by side (``--parallel 2``, each on one thread: the same share of the machine for each), and a
finished run in ``--output`` is reused. Prints a Markdown table (Dice at the end, steps, seconds per step) and
writes ``curves.png`` and ``curves.json``.

``--runs LABEL=FOLD_DIR ...`` only draws the curves of finished runs (any budgets) into ``--figure``.

Usage::

    python benchmarks/learning_curves.py [--minutes 14] [--recipes fidelity denoising ...] [--parallel 2]
        [--output learning_curves] [--dataset ../shared/data/Dataset027_ACDC]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset027_ACDC"

# Each recipe: (what it adds, `masksam train` options, run settings for --config). Cumulative, in order.
OLD_TRAINING: dict = {
    "learning_rate": 1e-3,
    "denoising_groups": 0,
    "warmup_steps": 0,
    "adapter_lr_scale": 1.0,
    "aux_mask_weight": 0.5,
    "box_init": "spread",
    "encoder_adapters_from": 0.0,
}
# The paper's box rule: the mean of the learned box and the box of every auxiliary-mask pixel above threshold.
OLD_BOXES: dict = {"prompt_generator": {"variant": "mask_avg_box", "mask_box_region": "all"}}
PAPER_RECIPE = {"model": OLD_BOXES, "training": OLD_TRAINING}
RECIPES: dict[str, tuple[str, list[str], dict]] = {
    "fidelity": (
        "step-0 fidelity, paper recipe (8 matched queries)",
        ["--queries", "matched", "--image-size", "128"],
        PAPER_RECIPE,
    ),
    "denoising": (
        "+ prompt denoising",
        ["--queries", "matched", "--image-size", "128"],
        {"model": OLD_BOXES, "training": {**OLD_TRAINING, "denoising_groups": 1}},
    ),
    "class_slots": (
        "+ class-slot queries, class boxes",
        ["--queries", "class_slots", "--image-size", "128"],
        {"model": OLD_BOXES, "training": {**OLD_TRAINING, "denoising_groups": 1, "box_init": "dataset"}},
    ),
    "optimiser": (
        "+ groups, warm-up, aux weight, paused encoder",
        ["--queries", "class_slots", "--image-size", "128"],
        {"model": OLD_BOXES},
    ),
    "largest_component": ("+ boxes of the masks' largest component (the defaults)", [], {}),
    "fidelity_256": (
        "paper recipe at 256² (what 128² buys)",
        ["--queries", "matched", "--image-size", "256"],
        PAPER_RECIPE,
    ),
}


def write_settings(path: Path, settings: dict) -> Path:
    """A ``--config`` file with the recipe's ``model`` and ``training`` settings (JSON is valid YAML)."""
    path.write_text(json.dumps(settings, indent=2))
    return path


def train_command(name: str, args) -> list[str]:
    _, options, settings = RECIPES[name]
    folder = args.output / name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "masksam", "train", str(args.dataset), "-o", str(folder)]
    command += ["--plans", str(args.output / "plans"), "--fold", "0", "--time-budget", f"{args.minutes:g}"]
    command += ["--seed", str(args.seed), "--num-workers", "1", "--no-final-validation", *options]
    if args.parallel > 1:
        command += ["--threads", "1"]
    if settings:
        command += ["--config", str(write_settings(folder / "recipe.json", settings))]
    return command


def curve(folder: Path) -> dict:
    """Minutes (cumulative epoch time) and mean pseudo-Dice per epoch, steps and seconds per step of a run."""
    fold = folder / "fold_0"
    with (fold / "metrics.csv").open() as handle:
        epochs = list(csv.DictReader(handle))
    minutes, total = [], 0.0
    for epoch in epochs:
        total += float(epoch["epoch_seconds"]) / 60
        minutes.append(total)
    log = (fold / "training_log.txt").read_text()
    schedule = re.findall(r"(\d+) epochs × (\d+) iterations", log)
    step = re.findall(r"one step takes ([0-9.]+) s", log)
    steps = len(epochs) * int(schedule[-1][1]) if schedule else None
    return {
        "minutes": minutes,
        "mean_dice": [float(epoch["mean_dice"]) for epoch in epochs],
        "dice": {key[5:]: float(epochs[-1][key]) for key in epochs[-1] if key.startswith("dice_")},
        "steps": steps,
        "step_seconds": float(step[-1]) if step else None,
    }


def run_recipes(names: list[str], args) -> None:
    """Trains every recipe without a finished run, ``args.parallel`` at a time."""
    pending = [name for name in names if not (args.output / name / "fold_0" / "checkpoint_final.pt").is_file()]
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            command = train_command(name, args)
            print("$ " + " ".join(command), flush=True)
            log = (args.output / name / "train.log").open("w")
            running.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for name, process in list(running):
            if process.poll() is not None:
                running.remove((name, process))
                if process.returncode != 0:
                    raise SystemExit(f"{name}: training failed; see {args.output / name / 'train.log'}")


def draw_runs(runs: list[str], path: Path) -> None:
    """The pseudo-Dice curves of finished runs given as ``LABEL=FOLD_DIR`` (any budgets) in one picture."""
    labelled = dict(item.split("=", 1) for item in runs)
    curves = {label: curve(Path(folder).parent) for label, folder in labelled.items()}
    draw(curves, path, max(data["minutes"][-1] for data in curves.values()), labels={k: k for k in curves})


def draw(
    curves: dict[str, dict], path: Path, minutes: float, labels: dict[str, str] | None = None, parallel: int = 1
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), dpi=120)
    axes = figure.add_subplot()
    for name, data in curves.items():
        label = labels[name] if labels else RECIPES[name][0]
        axes.plot([0.0, *data["minutes"]], [0.0, *data["mean_dice"]], marker="o", markersize=3, label=label)
    sharing = "run alone" if parallel == 1 else f"{parallel} runs side by side, 1 thread each"
    axes.set_xlabel(f"training minutes (2-core CPU, {sharing})")
    axes.set_ylabel("mean pseudo-Dice, fold-0 validation patches")
    axes.set_xlim(0, minutes * 1.02)
    axes.set_ylim(-0.02, 1.0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    axes.set_title("MaskSAM on frozen LiteMedSAM, ACDC: what each remedy buys", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--output", type=Path, default=Path("learning_curves"))
    parser.add_argument("--minutes", type=float, default=14.0, help="training budget of each recipe")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--parallel", type=int, default=1, help="runs side by side (each then on one thread)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs", nargs="+", metavar="LABEL=FOLD_DIR", help="only draw these finished runs' curves into --figure"
    )
    parser.add_argument("--figure", type=Path, help="picture of --runs (default: OUTPUT/runs.png)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.runs:
        draw_runs(args.runs, args.figure or args.output / "runs.png")
        return
    if not (args.output / "plans" / "plans.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "masksam", "plan", str(args.dataset), "-o", str(args.output / "plans")], check=True
        )
    run_recipes(args.recipes, args)
    curves = {name: curve(args.output / name) for name in args.recipes}
    draw(curves, args.output / "curves.png", args.minutes, parallel=args.parallel)
    (args.output / "curves.json").write_text(json.dumps(curves, indent=2))
    print(f"\n{args.minutes:g} minutes per recipe, {args.parallel} side by side\n")
    print("| recipe | steps | s/step | RV | MYO | LV | mean pseudo-Dice at the end | best |")
    print("|---|---|---|---|---|---|---|---|")
    for name, data in curves.items():
        dice = data["dice"]
        print(
            f"| {RECIPES[name][0]} | {data['steps']} | {data['step_seconds']:.1f} | {dice.get('RV', 0):.3f} | "
            f"{dice.get('MYO', 0):.3f} | {dice.get('LV', 0):.3f} | {data['mean_dice'][-1]:.3f} | "
            f"{max(data['mean_dice']):.3f} |"
        )


if __name__ == "__main__":
    main()
