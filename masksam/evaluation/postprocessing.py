"""Connected-component postprocessing, chosen on validation predictions as nnU-Net chooses it.

nnU-Net's rule (``nnUNetv2_determine_postprocessing``), on a folder of validation predictions and their
references: first, keeping only the largest connected component of the whole foreground is adopted if it raises
the mean foreground Dice; then, on top of it, keeping only the largest component of class k is adopted for
every class whose own Dice it raises. The rule is a small JSON file; ``apply`` runs it on any prediction folder.

Components are 26-connected (any shared face, edge or corner, in 3-D), so a structure cut by thick slices
stays one component when its pieces touch across slices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from masksam.errors import MaskSamError

RULE_FILE = "postprocessing.json"
RULE_FORMAT = "masksam-postprocessing"


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """A bool mask with only its largest 26-connected component (unchanged when it has at most one)."""
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(components.reshape(-1), minlength=count + 1)
    sizes[0] = 0  # background
    return components == int(np.argmax(sizes))


@dataclass(frozen=True)
class PostprocessingRule:
    """largest_foreground: keep only the foreground's largest component (every other voxel becomes background);
    largest_of_classes: then keep only the largest component of each of these classes."""

    largest_foreground: bool = False
    largest_of_classes: tuple[int, ...] = ()

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """An integer label map after the rule (a new array; the input is not changed)."""
        labels = np.array(labels, copy=True)
        if self.largest_foreground:
            labels[~keep_largest_component(labels > 0)] = 0
        for class_id in self.largest_of_classes:
            mask = labels == class_id
            labels[mask & ~keep_largest_component(mask)] = 0
        return labels

    def describe(self) -> str:
        parts = ["largest foreground component"] if self.largest_foreground else []
        if self.largest_of_classes:
            parts.append(f"largest component of class(es) {', '.join(map(str, self.largest_of_classes))}")
        return "; then ".join(parts) if parts else "none (raw predictions)"

    def save(self, path: Path, dice: dict[str, dict[str, float]] | None = None) -> Path:
        """Writes the rule (and the validation Dice it was chosen on) atomically as JSON."""
        from masksam.files import replace_atomically

        payload = {"format": RULE_FORMAT, **asdict(self), "validation_dice": dice or {}}
        text = json.dumps(payload, indent=2) + "\n"
        return replace_atomically(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: Path) -> PostprocessingRule:
        """Reads a rule written by :meth:`save`.

        Raises:
            MaskSamError: Missing, unreadable or not a masksam postprocessing file.
        """
        path = Path(path)
        if not path.is_file():
            raise MaskSamError(f"{path}: postprocessing rule not found; make one with 'masksam postprocess determine'")
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise MaskSamError(f"{path}: unreadable postprocessing rule ({error}); determine it again") from error
        if not isinstance(payload, dict) or payload.get("format") != RULE_FORMAT:
            raise MaskSamError(
                f"{path}: not a masksam postprocessing rule; pass the file 'postprocess determine' wrote"
            )
        return cls(
            largest_foreground=bool(payload.get("largest_foreground", False)),
            largest_of_classes=tuple(int(c) for c in payload.get("largest_of_classes", ())),
        )


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty (as ``masksam evaluate`` scores it)."""
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


@dataclass
class PostprocessingChoice:
    """The chosen rule and the mean Dice per class (over cases) of each stage: raw, after the foreground step,
    and after the chosen rule."""

    rule: PostprocessingRule
    dice: dict[str, dict[int, float]] = field(default_factory=dict)


def mean_class_dice(pairs: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[int]) -> dict[int, float]:
    """{class: mean Dice over the (prediction, reference) pairs}."""
    return {c: float(np.mean([dice(p == c, r == c) for p, r in pairs])) for c in classes}


def read_pairs(
    prediction_dir: Path, reference_dir: Path, *, only_predicted: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, reference) integer label maps of every reference case (see ``match_cases``).

    Raises:
        DatasetError: Missing folders or predictions, non-integer labels, or a prediction whose shape differs
            from its reference's.
    """
    from masksam.data.io import read_volume
    from masksam.errors import DatasetError
    from masksam.evaluation.summary import integer_labels, match_cases

    matched, _, _ = match_cases(prediction_dir, reference_dir, only_predicted=only_predicted)
    pairs = []
    for _, prediction_path, reference_path in matched:
        prediction = integer_labels(np.asarray(read_volume(prediction_path, is_label=True).array), prediction_path)
        reference = integer_labels(np.asarray(read_volume(reference_path, is_label=True).array), reference_path)
        if prediction.shape != reference.shape:
            raise DatasetError(
                f"{prediction_path}: shape {prediction.shape} differs from the reference's {reference.shape} "
                f"({reference_path}); predict on the reference's images"
            )
        pairs.append((prediction, reference))
    return pairs


def determine_postprocessing(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[int]
) -> PostprocessingChoice:
    """nnU-Net's choice (module docstring) on (prediction, reference) label maps of the validation cases."""
    raw = mean_class_dice(pairs, classes)
    foreground_rule = PostprocessingRule(largest_foreground=True)
    after_foreground = [(foreground_rule.apply(p), r) for p, r in pairs]
    foreground = mean_class_dice(after_foreground, classes)
    use_foreground = np.mean(list(foreground.values())) > np.mean(list(raw.values()))
    base, base_dice = (after_foreground, foreground) if use_foreground else (list(pairs), raw)
    chosen = []
    for class_id in classes:
        single = PostprocessingRule(largest_of_classes=(class_id,))
        if mean_class_dice([(single.apply(p), r) for p, r in base], [class_id])[class_id] > base_dice[class_id]:
            chosen.append(class_id)
    rule = PostprocessingRule(largest_foreground=bool(use_foreground), largest_of_classes=tuple(chosen))
    final = mean_class_dice([(rule.apply(p), r) for p, r in pairs], classes)
    return PostprocessingChoice(rule, {"raw": raw, "largest_foreground": foreground, "chosen": final})


def apply_to_folder(
    rule: PostprocessingRule,
    input_dir: Path,
    output_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Writes every ``CASE.nii(.gz)`` label map of ``input_dir`` after the rule into ``output_dir`` (same header).

    Raises:
        MaskSamError: ``input_dir`` is missing or holds no label map, or ``output_dir`` is ``input_dir``.
    """
    from masksam.data.io import read_volume
    from masksam.evaluation.summary import integer_labels
    from masksam.inference.export import write_label_map

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise MaskSamError(f"{input_dir}: prediction folder not found; pass the folder 'masksam predict' wrote")
    if output_dir.resolve() == input_dir.resolve():
        raise MaskSamError(f"{output_dir}: is the input folder; write the postprocessed maps to another folder")
    files = sorted(p for p in input_dir.iterdir() if p.name.endswith((".nii.gz", ".nii")) and p.is_file())
    if not files:
        raise MaskSamError(f"{input_dir}: no .nii.gz/.nii label maps found; pass the folder 'masksam predict' wrote")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        labels = integer_labels(np.asarray(read_volume(path, is_label=True).array), path)
        written.append(write_label_map(rule.apply(labels), path, output_dir / path.name))
        if progress is not None:
            progress(path.name)
    return written
