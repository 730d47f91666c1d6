"""The GPU smoke check for a 15-minute slot: every GPU path of masksam once, each step timed and proven.

Steps, each in its own process with its own time limit (killed with its children when it runs over):

    environment   python, torch, CUDA, cuDNN, GPU name, compute capability, memory
    plan          masksam plan on the carried cases
    train         masksam train --device DEVICE --time-budget 2 (fold 0, with its final validation)
    predict       masksam predict on the held-out cases (mirroring TTA on a GPU)
    evaluate      masksam evaluate against their labels
    bench-step    benchmarks/bench_train_step.py (bf16 on a GPU)
    bench-compile the same with --compile: compile time, graphs and graph breaks
    bench-predict benchmarks/bench_predict_acdc.py on the held-out cases
    gpu-tests     pytest -m gpu (skipped when pytest is not installed)

and a summary table at the end (also written to ``WORK/summary.md``); exit status 1 when a step failed.
A step whose input is missing (its planning or training failed) is skipped; so is a step when the
``--minutes`` of the whole check are spent.

Make the folder to carry, where the dataset and the weights are (about 45 MB)::

    python benchmarks/gpu_check.py bundle -o gpu_bundle [--dataset ../shared/data/Dataset027_ACDC]
        [--weights ~/.cache/masksam/lite_medsam.pth] [--train-patients 3] [--test-patients 1]

Run it from a copy of the tree (the package's dependencies installed; the tree need not be installed)::

    benchmarks/gpu_check.sh gpu_bundle                 # --device cuda: about 9 minutes on one GPU
    benchmarks/gpu_check.sh gpu_bundle --device cpu    # dry run: short budgets, tiny backbone, eager compile

The bundle's ``lite_medsam.pth`` is found through ``MASKSAM_CACHE`` (set to the bundle for every step), so
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset027_ACDC"
WEIGHTS_FILE = "lite_medsam.pth"
KILL_GRACE_SECONDS = 15
MIN_STEP_SECONDS = 20  # a step with less time left than this is skipped, not started

ENVIRONMENT_CODE = """
import platform, torch
line = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
if torch.cuda.is_available():
    index = torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    major, minor = torch.cuda.get_device_capability(index)
    line += [f"cuDNN {torch.backends.cudnn.version()}", f"GPU {properties.name}", f"capability {major}.{minor}",
             f"{properties.total_memory / 2**30:.0f} GiB", f"{torch.cuda.device_count()} visible"]
else:
    line += ["no CUDA GPU visible", f"{torch.get_num_threads()} CPU threads"]
import masksam
line.append(f"masksam from {masksam.__file__}")
print("ENVIRONMENT " + ", ".join(line))
"""


@dataclass(frozen=True)
class Budgets:
    """What each step does and may take on one kind of device.

    Attributes:
        total_minutes: The whole check; later steps are skipped when it is spent.
        train_minutes: ``masksam train --time-budget``.
        train_backbone: ``masksam train --backbone``.
        limits: Step name -> seconds before the step is killed.
        step_rows: ``bench_train_step.py --rows``.
        compile_rows: Rows of the ``--compile`` run.
        compile_backend: Its ``--compile-backend`` (eager: TorchDynamo's graphs and breaks without code generation).
        precision: ``bench_train_step.py --precision``.
        repeats: Timed steps per benchmark row.
        predict_rows: ``bench_predict_acdc.py --rows``.
        predict_cases: ``bench_predict_acdc.py --cases``.
        tta: Mirroring TTA in ``masksam predict``.
        workers: Data-loading / preprocessing processes.
    """

    total_minutes: float
    train_minutes: float
    train_backbone: str
    limits: dict[str, int]
    step_rows: tuple[str, ...]
    compile_rows: tuple[str, ...]
    compile_backend: str
    precision: str
    repeats: int
    predict_rows: tuple[str, ...]
    predict_cases: int
    tta: bool
    workers: int


BUDGETS = {
    "cuda": Budgets(
        total_minutes=12,
        train_minutes=2,
        train_backbone="lite_medsam",
        limits={
            "environment": 60,
            "plan": 180,
            "train": 420,
            "predict": 180,
            "evaluate": 120,
            "bench-step": 240,
            "bench-compile": 420,
            "bench-predict": 240,
            "gpu-tests": 300,
        },
        step_rows=("lite_medsam_128", "lite_medsam"),
        compile_rows=("lite_medsam_128",),
        compile_backend="inductor",
        precision="bf16",
        repeats=5,
        predict_rows=("lite_medsam",),
        predict_cases=2,
        tta=True,
        workers=4,
    ),
    # The dry run: every step once, with the cheapest settings that still run the same code. Training and the
    # step benchmark use the tiny backbone: one LiteMedSAM step took 10-45 s on 2 busy cores and overran.
    "cpu": Budgets(
        total_minutes=8,
        train_minutes=1,
        train_backbone="tiny",
        limits={
            "environment": 60,
            "plan": 120,
            "train": 240,
            "predict": 120,
            "evaluate": 60,
            "bench-step": 150,
            "bench-compile": 240,
            "bench-predict": 120,
            "gpu-tests": 180,
        },
        step_rows=("tiny",),
        compile_rows=("tiny",),
        compile_backend="eager",  # inductor's C++ code generation for even the tiny model overran 240 s on 2 cores
        precision="fp32",
        repeats=1,
        predict_rows=("tiny",),
        predict_cases=1,
        tta=False,
        workers=1,
    ),
}


@dataclass
class Step:
    """One command of the check and how to tell that it worked."""

    name: str
    command: list[str]
    proof: Callable[[str], list[str]]  # the step's output -> lines that prove it worked (raises if it did not)
    needs: tuple[str, ...] = ()
    skip_reason: str | None = None  # set when the step cannot run here (e.g. pytest not installed)


@dataclass
class Outcome:
    """How a step ended: its status, time, limit, the lines that prove it (or say why not) and its log."""

    name: str
    status: str  # ok, FAILED, TIMEOUT, skipped, interrupted
    seconds: float = 0.0
    limit: int = 0
    evidence: list[str] = field(default_factory=list)
    log: Path | None = None


class NotProven(Exception):
    """A step exited 0 but what it should have written is missing or wrong."""


def find_dataset(bundle: Path) -> Path:
    """The one dataset folder (holding dataset.json) in the bundle."""
    found = sorted(path.parent for path in bundle.glob("*/dataset.json"))
    if len(found) != 1:
        raise SystemExit(
            f"{bundle}: expected one dataset folder with a dataset.json, found {len(found)}; "
            "make the bundle with 'python benchmarks/gpu_check.py bundle -o DIR'"
        )
    if not (found[0] / "imagesTs").is_dir() or not (found[0] / "labelsTs").is_dir():
        raise SystemExit(f"{found[0]}: no imagesTs/labelsTs (held-out cases); remake the bundle")
    if not (bundle / WEIGHTS_FILE).is_file():
        raise SystemExit(f"{bundle / WEIGHTS_FILE}: not found; the bundle needs LiteMedSAM's weights")
    return found[0]


def last_lines(text: str, count: int, prefix: str = "") -> list[str]:
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and line.startswith(prefix)]
    return lines[-count:]


def table_lines(text: str) -> list[str]:
    """The benchmark's markdown table rows and compile lines (its proof)."""
    lines = [line.rstrip() for line in text.splitlines()]
    rows = [line for line in lines if " | " in line and not line.startswith("---")]
    compiled = [line for line in lines if line.startswith(("compile (", "  graph break"))]
    if len(rows) < 2:
        raise NotProven("no result table in the output")
    return rows + compiled


def build_steps(bundle: Path, dataset: Path, work: Path, device: str, budgets: Budgets) -> list[Step]:
    python = [sys.executable]
    masksam = [*python, "-m", "masksam"]
    plans, model, predictions = work / "plans", work / "model", work / "predictions"

    def environment(output: str) -> list[str]:
        lines = last_lines(output, 1, "ENVIRONMENT ")
        if not lines:
            raise NotProven("no ENVIRONMENT line")
        if device == "cuda" and "no CUDA GPU visible" in lines[0]:
            raise NotProven("--device cuda but no CUDA GPU is visible")
        return [lines[0].removeprefix("ENVIRONMENT ")]

    def planned(_: str) -> list[str]:
        content = json.loads((plans / "plans.json").read_text())
        folds = json.loads((plans / "splits_final.json").read_text())
        return [
            f"plans.json: preset {content.get('preset')}, patch {content['patch_size']}, target spacing "
            f"{content['target_spacing']}, {content['num_queries']} queries; {len(folds)} folds"
        ]

    def trained(_: str) -> list[str]:
        fold = model / "fold_0"
        if not (fold / "checkpoint_final.pt").is_file():
            raise NotProven(f"{fold / 'checkpoint_final.pt'} missing")
        with open(fold / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        last = rows[-1]
        evidence = [
            f"{len(rows)} epoch(s); last: train loss {float(last['train_loss']):.3f}, "
            f"{float(last['epoch_seconds']):.1f} s per epoch, mean pseudo-Dice {last.get('mean_dice') or 'n/a'}"
        ]
        evidence += last_lines((fold / "training_log.txt").read_text(), 2)
        summary = fold / "validation" / "summary.json"
        if summary.is_file():
            evidence.append(f"final validation: mean Dice {mean_dice(summary)}")
        return evidence

    def predicted(output: str) -> list[str]:
        cases = sorted(p.name for p in (dataset / "labelsTs").iterdir())
        written = [name for name in cases if (predictions / name).is_file()]
        if written != cases:
            raise NotProven(f"{len(written)} of {len(cases)} predictions written")
        return [f"{len(written)} prediction(s) in {predictions}", *last_lines(output, 1)]

    def evaluated(_: str) -> list[str]:
        return [f"mean Dice {mean_dice(predictions / 'summary.json')}"]

    def tested(output: str) -> list[str]:
        return last_lines(output, 1) or ["no output"]

    step_bench = [*python, str(REPO / "benchmarks" / "bench_train_step.py"), "--device", device]
    step_bench += ["--precision", budgets.precision, "--repeats", str(budgets.repeats)]
    tta = [] if budgets.tta else ["--no-tta"]
    pytest_missing = importlib.util.find_spec("pytest") is None
    return [
        Step("environment", [*python, "-c", ENVIRONMENT_CODE], environment),
        Step(
            "plan",
            [*masksam, "plan", str(dataset), "-o", str(plans), "-j", str(budgets.workers)],
            planned,
        ),
        Step(
            "train",
            [*masksam, "train", str(dataset), "-o", str(model), "--plans", str(plans), "--fold", "0"]
            + ["--device", device, "--time-budget", str(budgets.train_minutes), "-j", str(budgets.workers)]
            + ["--backbone", budgets.train_backbone],
            trained,
            needs=("plan",),
        ),
        Step(
            "predict",
            [*masksam, "predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions), "-m", str(model)]
            + ["--device", device, *tta],
            predicted,
            needs=("train",),
        ),
        Step(
            "evaluate",
            [*masksam, "evaluate", str(predictions), str(dataset / "labelsTs"), "--labels", str(dataset)],
            evaluated,
            needs=("predict",),
        ),
        Step("bench-step", [*step_bench, "--rows", *budgets.step_rows], table_lines),
        Step(
            "bench-compile",
            [*step_bench, "--compile", "--compile-backend", budgets.compile_backend, "--rows", *budgets.compile_rows],
            table_lines,
        ),
        Step(
            "bench-predict",
            [*python, str(REPO / "benchmarks" / "bench_predict_acdc.py"), "--dataset", str(dataset)]
            + ["--plans", str(plans), "--cases", str(budgets.predict_cases), "--device", device]
            + ["--rows", *budgets.predict_rows, "--threads", str(min(4, os.cpu_count() or 1))],
            table_lines,
            needs=("plan",),
        ),
        Step(
            "gpu-tests",
            [*python, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", str(REPO / "tests")],
            tested,
            skip_reason="pytest is not installed (pip install pytest)" if pytest_missing else None,
        ),
    ]


def mean_dice(summary: Path) -> str:
    """``0.812 (RV 0.70, MYO 0.80, LV 0.93)`` from a summary.json."""
    content = json.loads(summary.read_text())
    per_class = ", ".join(f"{c['name']} {c['Dice']:.3f}" for c in content["mean"].values())
    return f"{content['foreground_mean']['Dice']:.3f} ({per_class})"


def run_step(step: Step, limit: int, logs: Path, environment: dict[str, str]) -> Outcome:
    """Runs one step in its own process group, killed with its children after ``limit`` seconds."""
    log = logs / f"{step.name}.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(step.command) + "\n")
        handle.flush()
        process = subprocess.Popen(
            step.command, stdout=handle, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_group(process)
            return Outcome(step.name, "TIMEOUT", time.monotonic() - started, limit, [f"killed after {limit} s"], log)
        except KeyboardInterrupt:
            stop_group(process)
            return Outcome(step.name, "interrupted", time.monotonic() - started, limit, ["Ctrl-C"], log)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    # pytest exits 5 when it collects nothing: no gpu-marked test exists yet.
    if step.name == "gpu-tests" and returncode == 5:
        return Outcome(step.name, "ok", seconds, limit, ["no gpu-marked tests collected"], log)
    if returncode != 0:
        return Outcome(step.name, "FAILED", seconds, limit, [f"exit status {returncode}"] + last_lines(output, 8), log)
    try:
        evidence = step.proof(output)
    except (NotProven, OSError, KeyError, ValueError, IndexError) as error:
        return Outcome(step.name, "FAILED", seconds, limit, [f"exit 0 but not proven: {error}"], log)
    return Outcome(step.name, "ok", seconds, limit, evidence, log)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def summary_table(outcomes: list[Outcome], header: str) -> str:
    lines = [header, "", "| step | result | seconds | limit s | what proves it |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        proof = "<br>".join(line.replace("|", "/") for line in outcome.evidence[:4])
        lines.append(f"| {outcome.name} | {outcome.status} | {outcome.seconds:.0f} | {outcome.limit} | {proof} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    bundle = args.bundle.resolve()
    dataset = find_dataset(bundle)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    budgets = BUDGETS[device]
    total_seconds = 60 * (args.minutes if args.minutes is not None else budgets.total_minutes)
    work = (args.work or Path("gpu_check_runs") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=False)
    environment = {**os.environ, "MASKSAM_CACHE": str(bundle), "PYTHONUNBUFFERED": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    print(f"gpu_check: device {args.device}, bundle {bundle}, output {work}, {total_seconds / 60:.0f} minutes")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    for step in build_steps(bundle, dataset, work, args.device, budgets):
        needs = step.needs + (("environment",) if step.name != "environment" else ())  # a GPU (or CPU) that works
        failed = [name for name in needs if not any(o.name == name and o.status == "ok" for o in outcomes)]
        left = total_seconds - (time.monotonic() - started)
        limit = int(min(budgets.limits[step.name], left))
        if step.skip_reason or failed or limit < MIN_STEP_SECONDS:
            reason = step.skip_reason or (f"needs {', '.join(failed)}" if failed else "no time left")
            outcomes.append(Outcome(step.name, "skipped", 0.0, 0, [reason]))
            print(f"[{step.name}] skipped: {reason}", flush=True)
            continue
        print(f"[{step.name}] running (limit {limit} s, log {logs / (step.name + '.log')})", flush=True)
        outcome = run_step(step, limit, logs, environment)
        outcomes.append(outcome)
        print(f"[{step.name}] {outcome.status} in {outcome.seconds:.0f} s", flush=True)
        for line in outcome.evidence:
            print(f"    {line}", flush=True)
        if outcome.status == "interrupted":
            break
    environment_line = next((o.evidence[0] for o in outcomes if o.name == "environment" and o.evidence), "")
    header = f"gpu_check, device {args.device}, {time.strftime('%Y-%m-%d %H:%M')}: {environment_line}"
    table = summary_table(outcomes, header)
    (work / "summary.md").write_text(table)
    print("\n" + table)
    if any(o.status == "interrupted" for o in outcomes):
        return 130
    return 1 if any(o.status in ("FAILED", "TIMEOUT") for o in outcomes) else 0


def bundle(args: argparse.Namespace) -> int:
    """Copies a few patients' cases (training and held-out) and the LiteMedSAM weights into ``args.output``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(REPO))
    from dataset_subset import case_ids, check_dataset, write_subset

    from masksam.backbones.weights import default_weights_path
    from masksam.data.splits import group_of

    dataset = check_dataset(args.dataset, DEFAULT_DATASET)
    weights = (args.weights or default_weights_path("lite_medsam")).expanduser()
    if not weights.is_file():
        raise SystemExit(f"{weights}: not found; run 'masksam weights lite_medsam' or pass --weights FILE")
    patients: dict[str, list[str]] = {}
    for case_id in case_ids(dataset):
        patients.setdefault(group_of(case_id), []).append(case_id)
    names = sorted(patients)
    needed = args.train_patients + args.test_patients
    if len(names) < needed or args.train_patients < 2 or args.test_patients < 1:
        raise SystemExit(
            f"{dataset}: {len(names)} patients; --train-patients (at least 2, for a validation fold) plus "
            f"--test-patients (at least 1) must not exceed that"
        )
    output = args.output
    if output.exists() and any(output.iterdir()):
        raise SystemExit(f"{output}: exists and is not empty; choose a new folder")
    train = [c for name in names[: args.train_patients] for c in patients[name]]
    test = [c for name in names[args.train_patients : needed] for c in patients[name]]
    write_subset(dataset, train, output, test_ids=test)
    (output / WEIGHTS_FILE).write_bytes(weights.read_bytes())
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {output}: {len(train)} training and {len(test)} held-out case(s) and {WEIGHTS_FILE}, {size:.0f} MB")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="run the check on a bundle")
    runner.add_argument("bundle", type=Path, help="folder made by 'gpu_check.py bundle'")
    runner.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the dry run")
    runner.add_argument("--work", type=Path, help="output folder (default: gpu_check_runs/DATE-TIME)")
    runner.add_argument("--minutes", type=float, help="the whole check (default: 12 on cuda, 8 on cpu)")
    maker = commands.add_parser("bundle", help="make the folder to carry to the GPU machine")
    maker.add_argument("-o", "--output", type=Path, required=True)
    maker.add_argument("--dataset", type=Path, help=f"nnU-Net raw ACDC folder (default: {DEFAULT_DATASET})")
    maker.add_argument("--weights", type=Path, help="LiteMedSAM's weights (default: the cached download)")
    maker.add_argument("--train-patients", type=int, default=3, help="patients (two frames each) to train on")
    maker.add_argument("--test-patients", type=int, default=1, help="patients held out for predict + evaluate")
    args = parser.parse_args()
    sys.exit(run(args) if args.command == "run" else bundle(args))


if __name__ == "__main__":
    main()
