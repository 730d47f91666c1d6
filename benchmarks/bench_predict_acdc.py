"""Seconds per ACDC volume of ``masksam predict`` (sliding window, semantic map, export), with and without TTA.

Runs with glibc malloc keeping freed blocks, as the ``masksam`` command does. One row per (backbone, input
size, TTA): seconds per volume (median over the cases), windows per volume, and
seconds per window. The models have random adapters (prediction costs the same trained or not); LiteMedSAM
uses its real weights when cached. ``--profile`` also prints the top operators of predicting one case
without TTA for each backbone (torch.profiler, self CPU time).

Usage::

    python benchmarks/bench_predict_acdc.py [--dataset ../shared/data/Dataset027_ACDC] [--plans PLANS_DIR]
        [--cases 2] [--rows tiny lite_medsam lite_medsam_paper vit_b vit_b_1024] [--threads 1] [--device cpu]
        [--profile]

``--dataset`` defaults to ``../shared/data/Dataset027_ACDC`` beside the checkout (this project's machines);
elsewhere pass the folder. Only the ``--cases`` predicted are planned (linked into a temporary dataset of
their own; nothing is preprocessed: prediction preprocesses each case itself), unless ``--plans`` names the
plans folder of a ``masksam plan`` of the dataset, which is then used as it is.

``lite_medsam`` is today's ``masksam train`` default (128², one query per foreground class), ``lite_medsam_paper``
the default before 2026-12-02 (256², the paper's 8 matched queries). ``vit_b`` runs SAM ViT-B at the plans'
input side (256² for ACDC) with random weights (the cost of SAM's or MedSAM's); ``vit_b_1024`` at SAM's native
1024² (not a default row: meant for GPUs).
On a GPU the predictor runs under bf16 autocast, as ``masksam predict`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset_subset, also when loaded by a test
from dataset_subset import check_dataset, write_subset  # noqa: E402

DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset027_ACDC"
# row -> (backbone, input side or None for `masksam train`'s default, queries)
ROWS = {
    "tiny": ("tiny", None, "class_slots"),
    "lite_medsam": ("lite_medsam", None, "class_slots"),  # today's default: 128², one query per class
    "lite_medsam_paper": ("lite_medsam", 256, "matched"),  # the default before 2026-12-02: 256², 8 queries
    "vit_b": ("vit_b", None, "class_slots"),  # random weights: the same cost as SAM's or MedSAM's
    "vit_b_1024": ("vit_b", 1024, "class_slots"),  # SAM's native input: for GPUs
}
DEFAULT_ROWS = ["tiny", "lite_medsam", "lite_medsam_paper", "vit_b"]


def build_predictor(plans, plans_dir: Path, row: str, tta: bool, device: str):
    import torch

    from masksam.backbones.weights import find_cached_weights
    from masksam.inference.predictor import Predictor
    from masksam.model.masksam import build_masksam
    from masksam.training.checkpoint import TrainedModel
    from masksam.training.setup import model_config_for

    backbone, size, queries = ROWS[row]
    config = model_config_for(plans, backbone=backbone, queries=queries, image_size=size)
    torch.manual_seed(0)
    weights = find_cached_weights(backbone) if backbone == "lite_medsam" else None
    model = build_masksam(config, weights)
    trained = TrainedModel(model=model, plans=plans, payload={}, path=plans_dir / f"{row}.pt")
    return Predictor([trained], device=device, tta=tta)


def plans_folder(dataset: Path, case_ids: list[str], plans: Path | None, scratch: Path) -> Path:
    """The plans to predict with: ``plans`` when given, else a plan of only ``case_ids``.

    The cases are linked into ``scratch/raw`` as a dataset of their own and planned into ``scratch/plans``
    without preprocessing (prediction preprocesses each case itself), so ``--cases 2`` reads 2 cases, not 140.
    """
    from masksam.data.pipeline import plan_and_preprocess

    if plans is not None:
        return plans
    subset = write_subset(dataset, case_ids, scratch / "raw", link=True)
    plan_and_preprocess(subset, scratch / "plans", num_workers=1, preprocess=False, progress=False)
    return scratch / "plans"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help=f"nnU-Net raw ACDC folder (default: {DEFAULT_DATASET})")
    parser.add_argument("--plans", type=Path, help="plans folder of 'masksam plan' (default: plan the cases used)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=DEFAULT_ROWS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    dataset = check_dataset(args.dataset, DEFAULT_DATASET)
    if args.plans is not None and not (args.plans / "plans.json").is_file():
        raise SystemExit(f"{args.plans}: no plans.json there; pass the output folder of 'masksam plan {dataset}'")

    import torch

    from masksam.data.io import list_cases, read_dataset_json
    from masksam.data.plans import Plans
    from masksam.memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the masksam command does (masksam/memory.py)
    cases = list_cases(dataset, read_dataset_json(dataset), "Tr")[: args.cases]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        plans_dir = plans_folder(dataset, [case.case_id for case in cases], args.plans, Path(folder))
        plans = Plans.load(plans_dir)
        for row in args.rows:
            for tta in (False, True):
                predictor = build_predictor(plans, plans_dir, row, tta, args.device)
                patches = []  # (B, C, T, H, W) batch sizes given to the model: windows × mirrored copies
                predictor.models[0].register_forward_pre_hook(
                    lambda _, inputs, seen=patches: seen.append(inputs[0].shape[0])
                )
                seconds = []
                for case in cases:
                    start = time.perf_counter()
                    predictor.predict_case(case.images, Path(folder) / "out" / f"{row}-{case.case_id}.nii.gz")
                    seconds.append(time.perf_counter() - start)
                per_volume = statistics.median(seconds)
                copies = 4 if tta else 1
                windows = [sum(patches) / copies / len(cases)]
                results.append((row, predictor.models[0].config.image_size, tta, per_volume, windows, copies))
                print(f"{row} tta={tta}: {per_volume:.1f} s per volume", flush=True)
            if args.profile:
                profile_case(build_predictor(plans, plans_dir, row, False, args.device), cases[0], Path(folder))

    print(f"\nACDC volumes ({args.cases} cases), {args.threads} thread(s), device {args.device}")
    print("row | input | TTA | s per volume | windows per volume | s per window forward")
    print("--- | --- | --- | --- | --- | ---")
    for row, size, tta, per_volume, windows, copies in results:
        mean_windows = statistics.mean(windows)
        print(
            f"{row} | {size}² | {'4 mirrors' if tta else 'off'} | {per_volume:.1f} | {mean_windows:.0f} "
            f"| {per_volume / (mean_windows * copies):.2f}"
        )


def profile_case(predictor, case, folder: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        predictor.predict_case(case.images, folder / "profiled.nii.gz")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)


if __name__ == "__main__":
    main()
