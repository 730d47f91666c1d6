"""``masksam postprocess determine|apply``: nnU-Net's connected-component postprocessing.

``determine`` chooses the rule on validation predictions and their references (nnUNetv2_determine_postprocessing);
``apply`` runs a rule on a folder of predictions (nnUNetv2_apply_postprocessing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    help="Keep the largest connected components where validation says it helps (nnU-Net's postprocessing).",
    no_args_is_help=True,
)


@app.command("determine")
def determine(
    prediction_dir: Path = typer.Argument(..., help="Validation predictions (CASE.nii.gz), e.g. of a fold."),
    reference_dir: Path = typer.Argument(..., help="Their reference label maps (e.g. labelsTr)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Rule file to write (default: PREDICTION_DIR/postprocessing.json)."
    ),
    only_predicted: bool = typer.Option(
        False, "--only-predicted", help="Use only the reference cases that have a prediction (e.g. a fold's)."
    ),
) -> None:
    """Choose the rule on validation cases: the largest foreground component if it raises the mean Dice, then
    each class's largest component where it raises that class's Dice. Prints the Dice of each stage."""
    from masksam.evaluation.postprocessing import RULE_FILE, determine_postprocessing, read_pairs
    from masksam.evaluation.summary import label_values

    pairs = read_pairs(prediction_dir, reference_dir, only_predicted=only_predicted)
    classes = sorted({v for _, reference in pairs for v in label_values(reference) if v != 0})
    choice = determine_postprocessing(pairs, classes)
    print(f"{len(pairs)} case(s), mean Dice per class:")
    for stage, values in choice.dice.items():
        shown = "  ".join(f"{c}: {v:.4f}" for c, v in values.items())
        print(f"  {stage:<18} {shown}  mean {sum(values.values()) / max(len(values), 1):.4f}")
    path = choice.rule.save(
        output or prediction_dir / RULE_FILE,
        {stage: {str(c): v for c, v in values.items()} for stage, values in choice.dice.items()},
    )
    print(f"rule: {choice.rule.describe()}")
    print(f"written: {path} (apply it with: masksam postprocess apply IN_DIR OUT_DIR -r {path})")


@app.command("apply")
def apply(
    input_dir: Path = typer.Argument(..., help="Folder of predicted label maps."),
    output_dir: Path = typer.Argument(..., help="Folder for the postprocessed label maps (not INPUT_DIR)."),
    rule: Path = typer.Option(..., "--rule", "-r", help="postprocessing.json written by 'postprocess determine'."),
) -> None:
    """Write every label map of INPUT_DIR after the rule into OUTPUT_DIR (same headers; atomic writes)."""
    from masksam.evaluation.postprocessing import PostprocessingRule, apply_to_folder

    chosen = PostprocessingRule.load(rule)
    written = apply_to_folder(chosen, input_dir, output_dir)
    print(f"{chosen.describe()}: wrote {len(written)} label map(s) to {output_dir}", file=sys.stderr)
