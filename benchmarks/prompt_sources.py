"""Where a trained model's Dice goes: the same checkpoint scored with its box prompts taken from each source.

A generated-prompt MaskSAM gives SAM's decoder boxes made from its prompt generator. This benchmark loads one
trained checkpoint and scores the pseudo-Dice of fixed validation patches (drawn from the fold's validation
cases, two thirds centred on foreground, as the trainer's per-epoch validation; ``--cases train`` draws them from
the fold's training cases instead, to choose settings without the validation cases) with the boxes taken from:

- ``model``: the rule in the checkpoint's own config;
- ``learned``: the box head alone;
- ``mask_all``: the box of every auxiliary-mask pixel above the threshold (the learned box where empty);
- ``mask_largest``: the box of the auxiliary mask's largest connected component (the learned box where empty),
  each edge moved outward by the config's ``box_margin`` (0.01 of the side by default);
- ``mask_largest_tight``: the same box without the margin;
- ``average_largest``: the mean of ``learned`` and ``mask_largest`` (the paper's ``mask_avg_box`` with it);
- ``ground_truth``: each class slot's box from the labels (an upper bound: needs the labels);
- ``aux_masks``: no decoder at all: the auxiliary masks themselves as the segmentation (each slot its class).

``--without-encoder-adapters`` scores the checkpoint with the image encoder's adapters silenced (each adds nothing,
as at initialisation; the depth table stays): how much of what the model learned sits in them.

``--refine N`` adds N refinement passes (``masksam predict``'s default is 1) to every source but the ground-truth
boxes and the auxiliary masks. The image encoder runs once per batch (its output is reused by every source), so
a source costs a prompt generator and decoder pass. Class-slot models only (a slot's class is known, which
``aux_masks`` and ``ground_truth`` need). Prints a Markdown table of Dice per class.

Usage::

    python benchmarks/prompt_sources.py MODEL_DIR/fold_0/checkpoint_final.pt [--patches 56] [--seed 1]
        [--plans PLANS_DIR] [--cases val|train] [--refine N] [--without-encoder-adapters]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

SOURCES = (
    "model",
    "learned",
    "mask_all",
    "mask_largest",
    "mask_largest_tight",
    "average_largest",
    "ground_truth",
    "aux_masks",
)

# source: (prompt mode, generator variant, mask box region, box margin or None: the config's) for the sources the
# model's own config can express
CONFIGS = {
    "learned": ("generated", "box", "all", None),
    "mask_all": ("generated", "mask", "all", None),
    "mask_largest": ("generated", "mask", "largest_component", None),
    "mask_largest_tight": ("generated", "mask", "largest_component", 0.0),
    "average_largest": ("generated", "mask_avg_box", "largest_component", None),
    "ground_truth": ("ground_truth", None, None, None),
}


class EncoderOnce(nn.Module):
    """Wraps the image encoder so that the same input (every source of one batch) is encoded once."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.last_input: torch.Tensor | None = None
        self.last_output = None

    def forward(self, rgb: torch.Tensor):
        if self.last_input is None or self.last_input.shape != rgb.shape or not torch.equal(self.last_input, rgb):
            self.last_input, self.last_output = rgb.clone(), self.encoder(rgb)
        return self.last_output


class SilentAdapter(nn.Module):
    """Stands in for one adapter and adds nothing: the tokens back in series, zeros beside an MLP."""

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip = skip

    def forward(self, tokens: torch.Tensor, grid=None) -> torch.Tensor:
        return tokens if self.skip else torch.zeros_like(tokens)


def silence_encoder_adapters(encoder: nn.Module) -> int:
    """Replaces every adapter of the image encoder by a :class:`SilentAdapter`; returns how many."""
    count = 0
    for adapters in (encoder.attention_adapters, encoder.mlp_adapters):  # nn.ModuleList, empty when off
        for index, adapter in enumerate(adapters):
            adapters[index] = SilentAdapter(adapter.skip)
            count += 1
    return count


def source_config(config, source: str):
    """The model config that takes its boxes from ``source`` (``model`` and ``aux_masks``: unchanged)."""
    if source not in CONFIGS:
        return config
    mode, variant, region, margin = CONFIGS[source]
    generator = config.prompt_generator
    if variant is not None:
        generator = replace(generator, variant=variant, mask_box_region=region)
    if margin is not None:
        generator = replace(generator, box_margin=margin)
    return replace(config, prompt_mode=mode, prompt_generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--patches", type=int, default=56, help="validation patches (cycling over the cases)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the patch draw")
    parser.add_argument(
        "--plans", type=Path, default=None, help="the training's plans folder (default: MODEL_DIR/../plans)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--refine", type=int, default=0, help="refinement passes after each generated-prompt source (default 0)"
    )
    parser.add_argument(
        "--cases",
        choices=["val", "train"],
        default="val",
        help="draw the patches from the fold's validation cases "
        "(default) or its training cases (to choose settings without looking at the validation cases)",
    )
    parser.add_argument(
        "--without-encoder-adapters",
        action="store_true",
        help="silence the image encoder's adapters (each adds nothing, as at initialisation)",
    )
    args = parser.parse_args()

    import torch.nn.functional as F

    from masksam.data.targets import build_class_slot_targets
    from masksam.inference.semantic import class_weighted_masks, semantic_scores
    from masksam.training.checkpoint import load_trained_model
    from masksam.training.validation import confusion_counts, dice_from_counts, draw_validation_patches

    if args.threads:
        torch.set_num_threads(args.threads)
    trained = load_trained_model(args.checkpoint)
    model, config = trained.model, trained.model.config
    if config.queries != "class_slots":
        raise SystemExit(f"{args.checkpoint}: a class-slot model is needed (this one has {config.queries} queries)")
    fold = int(trained.payload["training_config"]["fold"])
    plans_dir = args.plans or args.checkpoint.resolve().parents[2] / "plans"
    cases = json.loads((plans_dir / "splits_final.json").read_text())[fold][args.cases]
    patches = draw_validation_patches(
        plans_dir / trained.plans.preprocessed_folder,
        cases,
        count=args.patches,
        patch_size=config.patch_size,
        seed=args.seed,
    )
    silenced = silence_encoder_adapters(model.image_encoder) if args.without_encoder_adapters else 0
    model.image_encoder = EncoderOnce(model.image_encoder)
    num_classes = config.num_classes
    slot_probabilities = F.one_hot(torch.tensor(config.segment_class_ids()), num_classes + 1)[:, :-1].float()
    counts = {source: torch.zeros(num_classes, 3, dtype=torch.int64) for source in SOURCES}
    with torch.no_grad():
        for image, label in patches.batches(trained.plans.batch_size):
            targets = build_class_slot_targets(label, num_classes=num_classes, include_background=False)
            for source in SOURCES:
                model.config = source_config(config, source)
                if source == "ground_truth":
                    output = model(image, targets.boxes)
                else:
                    output = model(image, refinement_passes=0 if source == "aux_masks" else args.refine)
                if source == "aux_masks":
                    probabilities = slot_probabilities.expand(output.aux_mask_logits.shape[0], -1, -1)  # (G, N, K)
                    scores = class_weighted_masks(probabilities, output.aux_mask_logits, include_background=False)
                else:
                    scores = semantic_scores(output.class_logits, output.mask_logits, include_background=False)
                counts[source] += confusion_counts(scores.argmax(dim=1).reshape(label.shape), label, num_classes)
    names = [name for name, value in sorted(trained.plans.labels.items(), key=lambda item: item[1]) if value]
    where = "validation" if args.cases == "val" else "training"
    passes = f", {args.refine} refinement pass(es)" if args.refine else ""
    passes += f", the encoder's {silenced} adapters silenced" if args.without_encoder_adapters else ""
    print(f"\n{args.checkpoint}: {len(patches)} patches of fold {fold}'s {where} cases{passes}, pseudo-Dice in %\n")
    print(f"| boxes from | {' | '.join(names)} | mean |")
    print(f"|---|{'---|' * (len(names) + 1)}")
    for source in SOURCES:
        dice = dice_from_counts(counts[source])[1:] * 100
        print(f"| {source} | {' | '.join(f'{float(v):.1f}' for v in dice)} | {float(dice.mean()):.1f} |")


if __name__ == "__main__":
    main()
