"""Time of one MaskSAM training step (forward + backward + AdamW step) and one inference forward on CPU.

Table printed, one row per (backbone, input size, preset, N queries): train step s, its forward s and
backward+step s, inference forward s (eval mode, no autograd), the process CPU time of a train step (user +
sys of all threads; it includes OpenMP threads spin-waiting, so it is no cure for a busy machine), the peak
RSS of the process that ran it (on a GPU: peak CUDA allocations), the FLOPs of one forward + backward pass
as ``torch.utils.flop_counter`` counts them (matmuls and convolutions; element-wise work is not counted),
the FLOP rate that gives, the dense-matmul rate measured in the same process on the same device (2048²
fp32 on a CPU, bf16 on a GPU: the practical peak), and their ratio, the utilisation. Times are medians over
the repeats. Each row runs in a fresh process so its peak RSS is its own. The input is a random (B, C, T, H, W)
patch; the loss is the mean square of every output (the matcher and losses are not part of this
benchmark). Trainable tensors that start at zero (adapter outputs, depth tables) get small random values, as
after some training, so every branch of the model does real work and the gradient check below means
something.

``--compare REF`` runs the same rows on the package as committed at git revision REF (extracted into a
temporary folder) and on the working tree, alternating the two processes ``--rounds`` times (the machine is
shared and noisy; a ratio measured side by side is more trustworthy than two tables taken at different
times). It also checks that both give the same outputs and the same gradients (max relative difference).

Usage::

    python benchmarks/bench_train_step.py [--rows tiny lite_medsam ...] [--vit-b] [--batch 1] [--repeats 3]
        [--threads 2] [--device cpu] [--precision auto] [--compile] [--num-queries N] [--compare REF] [--rounds 1]
        [--profile] [--keep-freed-memory]

``--keep-freed-memory`` runs the processes with glibc's malloc told to keep freed memory (see
``KEEP_FREED_MEMORY``). Measured here (lite_medsam acdc, batch 1, 2 threads): train step 19.4-19.8 s ->
11.2 s, inference 5.5-7.2 s -> 5.0 s, peak RSS 7.1-7.2 GB -> 8.4 GB.

Rows: ``tiny`` (tiny preset), ``lite_medsam`` (ACDC preset: 4×256×256, N=8), ``lite_medsam_128`` (the
same patch run through LiteMedSAM at 128²), ``vit_b`` (ACDC preset on SAM ViT-B at 256²), ``vit_b_1024``
(ViT-B at SAM's native 1024², for GPUs). ``--device cuda`` runs under bf16 autocast unless ``--precision fp32``;
``--compile`` wraps the model in ``torch.compile`` (as ``masksam train --compile`` does) and times it after the
warm-up step that compiles it; a line under the table then gives that first step's and the first inference's
time (compiling included), the graphs torch._dynamo compiled and its graph breaks with their reasons.
Attention is always PyTorch's SDPA (``F.scaled_dot_product_attention``), which picks flash or
memory-efficient kernels on GPUs by itself.

``lite_medsam`` uses the real weights when ``masksam weights lite_medsam`` has been run (random weights
otherwise: same cost); ``--vit-b`` adds a ViT-B row at 256² (random weights, slow).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (row name, preset, config overrides): the shipped presets with their default backbone.
ROWS: dict[str, tuple[str, dict[str, object]]] = {
    "tiny": ("tiny", {}),
    "lite_medsam": ("acdc", {}),
    "lite_medsam_128": ("acdc", {"image_size": 128}),  # the ACDC patch run through LiteMedSAM at 128²
    "vit_b": ("acdc", {"backbone": "vit_b"}),
    "vit_b_1024": ("acdc", {"backbone": "vit_b", "image_size": 1024}),  # SAM's native input: for GPUs
}


# glibc malloc returns every block over 32 MiB to the kernel when it is freed, so each of the decoder's
# many 64-268 MB activations is page-faulted (and zeroed by the kernel) again at every step: up to half of a
# CPU step's time is system time. With these settings freed blocks are kept and reused. Linux/glibc only;
# they must be in the environment when the process starts (or set with mallopt() before the first step).
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


@dataclass
class Timing:
    """Seconds per measured repeat, and the worker's peak resident memory."""

    row: str
    backbone: str
    preset: str
    batch: int
    queries: int
    forward: list[float]
    backward: list[float]
    inference: list[float]
    step_cpu: list[float]
    peak_rss_mb: float
    package: str
    image_size: int = 0
    step_gflop: float = 0.0
    matmul_gflops: float = 0.0
    device: str = "cpu"
    mode: str = "fp32"
    first_step: float = 0.0  # the warm-up step: with --compile, compiling the training graphs and one step
    first_inference: float = 0.0  # the inference warm-up: with --compile, compiling the eval graph and one forward
    graph_breaks: int = -1  # --compile: graph breaks torch._dynamo counted (-1: not compiled)
    graphs: int = 0  # --compile: graphs torch._dynamo compiled
    break_reasons: list[str] = dataclasses.field(default_factory=list)  # --compile: the distinct reasons


def worker(spec: dict[str, object]) -> None:
    """Build the model of one row, time it, print a `Timing` as one JSON line; save outputs if asked."""
    sys.path.insert(0, str(spec["source"]))  # the package under test: the working tree or an extracted REF
    import dataclasses
    import resource
    import time

    import torch

    import masksam
    from masksam.backbones.weights import find_cached_weights
    from masksam.model.config import preset_config
    from masksam.model.masksam import build_masksam

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(str(spec.get("device") or "cpu"))
    preset, overrides = ROWS[str(spec["row"])]
    if spec.get("num_queries"):
        overrides = {**overrides, "num_queries": int(spec["num_queries"])}
    config = preset_config(preset, **overrides)
    torch.manual_seed(0)
    checkpoint = find_cached_weights(config.backbone) if config.backbone == "lite_medsam" else None
    model = build_masksam(config, checkpoint).to(device)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    batch = int(spec["batch"])
    volume = torch.randn((batch, config.in_channels, *config.patch_size), generator=generator).to(device)
    # --precision auto: bf16 autocast on GPUs (the trainer's default there), fp32 on the CPU (bf16 is emulated).
    precision = str(spec.get("precision") or "auto")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    mode = ("bf16" if bf16 else "fp32") + ("+compile" if spec.get("compile") else "")
    eager = model  # FLOPs are counted on the eager module (the counter does not see into compiled graphs)
    backend = str(spec.get("compile_backend") or "inductor")
    if spec.get("compile") and backend != "inductor":  # e.g. eager: TorchDynamo's graphs and breaks, no codegen
        model = torch.compile(model, backend=backend)
    elif spec.get("compile"):
        try:  # as `masksam train --compile` does (an older revision under --compare may lack it)
            from masksam.training.compilation import compile_network
        except ImportError:
            compile_network = torch.compile
        model = compile_network(model)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def loss_of(output: object) -> torch.Tensor:
        fields = (getattr(output, f.name) for f in dataclasses.fields(output))
        return sum(value.float().square().mean() for value in fields if value is not None)  # None: not produced

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def train_step() -> tuple[float, float, float]:
        synchronize()
        cpu, start = cpu_seconds(), time.perf_counter()
        with autocast:
            output = model(volume)
        synchronize()
        middle = time.perf_counter()
        loss_of(output).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        return middle - start, time.perf_counter() - middle, cpu_seconds() - cpu

    def inference() -> float:
        synchronize()
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            model(volume)
        synchronize()
        return time.perf_counter() - start

    save = spec.get("save")
    if save:  # outputs and gradients of the untouched model, before any optimizer step
        model.eval()
        with torch.no_grad():
            output = model(volume)
        outputs = {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
        outputs = {name: value for name, value in outputs.items() if value is not None}
        model.train()
        loss_of(model(volume)).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        optimizer.zero_grad(set_to_none=True)
        torch.save({"outputs": outputs, "grads": grads}, str(save))

    model.train()
    first_step = sum(train_step()[:2])  # warm-up: first calls pick kernels, grow the allocator and (--compile) compile
    forward, backward, step_cpu = zip(*(train_step() for _ in range(int(spec["repeats"]))), strict=True)
    model.eval()
    first_inference = inference()  # warm-up (--compile: the eval graph is compiled here)
    inference_times = [inference() for _ in range(int(spec["repeats"]))]
    if spec.get("profile"):
        print_profile(model.train(), train_step)
    step_gflop = count_step_flops(eager.train(), volume, loss_of, autocast) / 1e9
    matmul_gflops = dense_matmul_gflops(device)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    timing = Timing(
        row=str(spec["row"]),
        backbone=config.backbone,
        preset=preset,
        batch=batch,
        queries=config.num_queries,
        forward=list(forward),
        backward=list(backward),
        inference=inference_times,
        step_cpu=list(step_cpu),
        peak_rss_mb=peak_mb,
        package=str(Path(masksam.__file__).parent),
        image_size=config.image_size,
        step_gflop=step_gflop,
        matmul_gflops=matmul_gflops,
        device=str(device),
        mode=mode,
        first_step=first_step,
        first_inference=first_inference,
        **(compile_statistics() if spec.get("compile") else {}),
    )
    print("RESULT " + json.dumps(asdict(timing)), flush=True)


def compile_statistics() -> dict[str, object]:
    """Graph breaks, compiled graphs and the distinct break reasons torch._dynamo counted in this process."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]  # reason -> count
    return {
        "graph_breaks": int(sum(breaks.values())),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "break_reasons": sorted(str(reason).splitlines()[0][:200] for reason in breaks),
    }


def count_step_flops(model, volume, loss_of, autocast) -> float:
    """FLOPs of one forward + backward pass, as torch.utils.flop_counter counts them (matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast:
            output = model(volume)
        loss_of(output).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def dense_matmul_gflops(device, size: int = 2048, repeats: int = 10) -> float:
    """Best-of-three fp32 (CPU) or bf16 (GPU) square matmul throughput: the device's practical peak."""
    import time

    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def print_profile(model: object, train_step: object) -> None:
    """Top operators by self CPU time over one training step (stderr)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)


def run_worker(source: Path, row: str, args: argparse.Namespace, save: Path | None = None) -> Timing:
    """Run `worker` in a fresh Python process on the package found under `source`."""
    spec = {
        "source": str(source),
        "row": row,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": args.threads,
        "save": str(save) if save else None,
        "profile": args.profile,
        "num_queries": args.num_queries,
        "device": args.device,
        "precision": args.precision,
        "compile": args.compile,
        "compile_backend": args.compile_backend,
    }
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if args.keep_freed_memory:
        env.update(KEEP_FREED_MEMORY)
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if args.profile:
        print(done.stderr, file=sys.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"worker for {row} on {source} failed:\n{done.stderr[-3000:]}")
    timing = Timing(**json.loads(lines[-1][len("RESULT ") :]))
    if not Path(timing.package).is_relative_to(source):
        raise SystemExit(f"the worker imported masksam from {timing.package}, not from {source}")
    return timing


def extract_revision(revision: str, into: Path) -> Path:
    """Write the `masksam/` package as committed at `revision` under `into`; return `into`."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "package.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(REPO), "archive", revision, "masksam"], stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def max_relative_difference(reference: Path, candidate: Path) -> dict[str, float]:
    """max over tensors of max |a - b| / scale, per group (outputs, gradients); inf when keys or shapes differ.

    scale = max |a| of the tensor, floored at 1e-3 x the largest max |a| of its group: some gradients are
    zero up to rounding (a conv bias before InstanceNorm), and their relative difference is noise.
    """
    import torch

    ref, new = torch.load(reference), torch.load(candidate)
    result = {}
    for group in ("outputs", "grads"):
        if ref[group].keys() != new[group].keys() or any(
            ref[group][name].shape != new[group][name].shape for name in ref[group]
        ):
            result[group] = float("inf")
            continue
        floor = 1e-3 * max((a.abs().max().item() for a in ref[group].values()), default=0.0)
        result[group] = max(
            (
                ((a - new[group][name]).abs().max() / a.abs().max().clamp_min(floor).clamp_min(1e-30)).item()
                for name, a in ref[group].items()
            ),
            default=0.0,
        )
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(rows: list[tuple[str, Timing]]) -> None:
    header = ["version", "device", "mode", "backbone", "input", "preset", "batch", "N", "train step s"]
    header += ["forward s", "backward s"]
    header += ["infer s", "step CPU s", "peak MB", "GFLOP/step", "GFLOP/s", "matmul GFLOP/s", "utilisation"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for version, t in rows:
        forward, backward = median(t.forward), median(t.backward)
        steps = [f + b for f, b in zip(t.forward, t.backward, strict=True)]
        achieved = t.step_gflop / median(steps)
        cells = [version, t.device, t.mode, t.backbone, f"{t.image_size}²", t.preset, str(t.batch), str(t.queries)]
        cells += [f"{median(steps):.3g}", f"{forward:.3g}", f"{backward:.3g}", f"{median(t.inference):.3g}"]
        cells += [f"{median(t.step_cpu):.1f}", f"{t.peak_rss_mb:.0f}", f"{t.step_gflop:.3g}", f"{achieved:.0f}"]
        cells += [f"{t.matmul_gflops:.0f}", f"{achieved / t.matmul_gflops:.0%}" if t.matmul_gflops else ""]
        print(" | ".join(cells))
    for version, t in rows:
        if t.graph_breaks >= 0:
            print(
                f"compile ({version}, {t.backbone} {t.image_size}², {t.mode}): "
                f"first training step {t.first_step:.1f} s and first inference {t.first_inference:.1f} s "
                f"(compiling included), {t.graphs} graph(s), {t.graph_breaks} graph break(s)"
            )
            for reason in t.break_reasons:
                print(f"  graph break: {reason}")


def merge(timings: list[Timing]) -> Timing:
    """One Timing holding the repeats of several worker runs of the same row (peak RSS: the largest)."""
    first = timings[0]
    return Timing(
        row=first.row,
        backbone=first.backbone,
        preset=first.preset,
        batch=first.batch,
        queries=first.queries,
        forward=[x for t in timings for x in t.forward],
        backward=[x for t in timings for x in t.backward],
        inference=[x for t in timings for x in t.inference],
        step_cpu=[x for t in timings for x in t.step_cpu],
        peak_rss_mb=max(t.peak_rss_mb for t in timings),
        package=first.package,
        image_size=first.image_size,
        step_gflop=first.step_gflop,
        matmul_gflops=max(t.matmul_gflops for t in timings),
        device=first.device,
        mode=first.mode,
        first_step=max(t.first_step for t in timings),
        first_inference=max(t.first_inference for t in timings),
        graph_breaks=first.graph_breaks,
        graphs=first.graphs,
        break_reasons=first.break_reasons,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", nargs="+", default=["tiny", "lite_medsam"], choices=list(ROWS))
    parser.add_argument("--vit-b", action="store_true", help="add the ViT-B row (slow)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per process (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (peak MB = CUDA allocations)")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="autocast dtype (auto: bf16 on a GPU, fp32 on the CPU)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (timed after a warm-up)")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (eager: graph capture and graph breaks only, no code generation; for dry runs)",
    )
    parser.add_argument("--num-queries", type=int, help="override the preset's number of queries N")
    parser.add_argument("--compare", metavar="REF", help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=1, help="alternating processes per version with --compare")
    parser.add_argument("--profile", action="store_true", help="print the top operators of one training step")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run with glibc malloc told to keep freed blocks (see KEEP_FREED_MEMORY)",
    )
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    rows = list(dict.fromkeys(args.rows + (["vit_b"] if args.vit_b else [])))
    if not args.compare:
        print_table([("tree", run_worker(REPO, row, args)) for row in rows])
        return

    with tempfile.TemporaryDirectory() as folder:
        reference = extract_revision(args.compare, Path(folder) / "ref")
        table: list[tuple[str, Timing]] = []
        checks = []
        for row in rows:
            runs: dict[str, list[Timing]] = {args.compare: [], "tree": []}
            saves = {args.compare: Path(folder) / f"{row}-ref.pt", "tree": Path(folder) / f"{row}-tree.pt"}
            for round_index in range(args.rounds):
                for version, source in ((args.compare, reference), ("tree", REPO)):
                    save = saves[version] if round_index == 0 else None
                    runs[version].append(run_worker(source, row, args, save))
            table += [(version, merge(timings)) for version, timings in runs.items()]
            ref, new = (merge(runs[args.compare]), merge(runs["tree"]))
            ratio = [
                median([f + b for f, b in zip(ref.forward, ref.backward, strict=True)])
                / median([f + b for f, b in zip(new.forward, new.backward, strict=True)]),
                median(ref.forward) / median(new.forward),
                median(ref.backward) / median(new.backward),
                median(ref.inference) / median(new.inference),
            ]
            difference = max_relative_difference(saves[args.compare], saves["tree"])
            checks.append((row, ratio, difference))
        print_table(table)
        print()
        print("row | speed-up train step | forward | backward | inference | max rel. diff outputs | gradients")
        print("--- | --- | --- | --- | --- | --- | ---")
        for row, ratio, difference in checks:
            cells = [row, *(f"{r:.2f}x" for r in ratio)]
            cells += [f"{difference['outputs']:.1e}", f"{difference['grads']:.1e}"]
            print(" | ".join(cells))


if __name__ == "__main__":
    main()
