"""Evaluating a folder of predicted label maps against a folder of references, and ``summary.json``.

Files are matched by name (nnU-Net naming, ``CASE.nii.gz``): every reference case (or each of the chosen ones)
needs a prediction of the same name, unless only the predicted cases are asked for (nnU-Net's ``--chill``); other
files in the prediction folder (``summary.json``, probability ``.npz``, predictions without a
reference) are ignored. Each pair must share shape and affine; the spacing of the metrics is the reference's.
Classes come from a ``dataset.json`` (every label except background) or, without one, from the label values
found in the references. Per class, Dice and HD95 are averaged over all cases (absent in both = Dice 1, HD95 0;
see :mod:`masksam.evaluation.metrics`); the foreground mean is the mean of those class means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masksam.data.cache import write_json_atomic
from masksam.data.io import read_dataset_json, read_volume
from masksam.data.parallel import map_cases
from masksam.data.validation import AFFINE_ATOL, AFFINE_RTOL
from masksam.errors import ConfigError, DatasetError
from masksam.evaluation.metrics import HD_PERCENTILE, ClassMetrics, label_metrics

NIFTI_ENDINGS = (".nii.gz", ".nii")
SUMMARY_FILE = "summary.json"
# The order of the folders differs from nnU-Net's; said wherever a swap is the likely mistake.
SWAPPED_HINT = (
    "masksam evaluate takes PREDICTION_DIR first and REFERENCE_DIR second (nnUNetv2_evaluate_folder takes the "
    "reference first)"
)

DEFINITIONS = {
    "Dice": "2*|P and R| / (|P| + |R|) in voxels, per class and case",
    "HD95": (
        f"{HD_PERCENTILE:g}th percentile (numpy linear interpolation) of the pooled surface distances in mm of both "
        "directions (P->R and R->P in one array, as medpy's hd95); surface = mask voxels with a face neighbour "
        "outside the mask (array border counts as outside); distances between voxel centres with the reference's "
        "voxel spacing"
    ),
    "empty_masks": (
        "both empty: Dice 1.0, HD95 0.0; exactly one empty: Dice 0.0, HD95 = diagonal of the volume in mm, "
        "sqrt(sum((shape*spacing)^2)), a finite worst case so that means count the failure"
    ),
    "mean": "per class: mean over all cases (including cases where the class is absent in both)",
    "foreground_mean": "mean of the per-class means over the evaluated classes (background 0 is never evaluated)",
}


@dataclass(frozen=True)
class CaseJob:
    """One prediction/reference pair to evaluate (picklable, for the worker pool).

    Attributes:
        case_id: Case identifier (file name without ending).
        prediction: Predicted label map file.
        reference: Reference label map file.
        class_ids: Classes to evaluate, or None for every positive value found in either map.
        allowed_values: Label values a map may contain (dataset.json), or None to accept any.
    """

    case_id: str
    prediction: Path
    reference: Path
    class_ids: tuple[int, ...] | None = None
    allowed_values: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case.

    Attributes:
        case_id: Case identifier.
        prediction: Predicted label map file.
        reference: Reference label map file.
        spacing: Voxel size in mm per array axis, from the reference header.
        metrics: Class id -> metrics of every class evaluated in this case.
        prediction_values: Label values found in the prediction.
        reference_values: Label values found in the reference.
    """

    case_id: str
    prediction: Path
    reference: Path
    spacing: tuple[float, float, float]
    metrics: dict[int, ClassMetrics]
    prediction_values: tuple[int, ...]
    reference_values: tuple[int, ...]


@dataclass(frozen=True)
class ClassSummary:
    """Mean metrics of one class over all cases.

    Attributes:
        class_id: Label value.
        name: Label name (from dataset.json, else the value as text).
        dice: Mean Dice over cases.
        hd95: Mean HD95 over cases (mm).
        num_cases: Cases averaged.
        num_present: Cases whose reference contains the class.
    """

    class_id: int
    name: str
    dice: float
    hd95: float
    num_cases: int
    num_present: int


@dataclass(frozen=True)
class EvaluationSummary:
    """Everything ``summary.json`` holds.

    Attributes:
        prediction_dir: The prediction folder.
        reference_dir: The reference folder.
        cases: Per-case results, sorted by case id.
        classes: Per-class means, in label order.
        foreground_dice: Mean of the class means of Dice.
        foreground_hd95: Mean of the class means of HD95 (mm).
        ignored_files: Files of the prediction folder that were not evaluated.
        unpredicted_cases: Reference cases left out because they have no prediction (``only_predicted``).
    """

    prediction_dir: Path
    reference_dir: Path
    cases: list[CaseResult]
    classes: list[ClassSummary]
    foreground_dice: float
    foreground_hd95: float
    ignored_files: list[str] = field(default_factory=list)
    unpredicted_cases: list[str] = field(default_factory=list)

    def references_without_foreground(self) -> list[str]:
        """Cases whose reference holds only background (all of them: the folders are probably swapped)."""
        return [case.case_id for case in self.cases if not any(value > 0 for value in case.reference_values)]

    def to_json(self) -> dict:
        """Returns the content of ``summary.json`` (nnU-Net-like: metric_per_case, mean, foreground_mean)."""
        names = {c.class_id: c.name for c in self.classes}
        return {
            "prediction_folder": str(self.prediction_dir),
            "reference_folder": str(self.reference_dir),
            "labels": {str(k): v for k, v in names.items()},
            "definitions": DEFINITIONS,
            "foreground_mean": {"Dice": self.foreground_dice, "HD95": self.foreground_hd95},
            "mean": {
                str(c.class_id): {
                    "name": c.name,
                    "Dice": c.dice,
                    "HD95": c.hd95,
                    "num_cases": c.num_cases,
                    "num_reference_nonempty": c.num_present,
                }
                for c in self.classes
            },
            "metric_per_case": [
                {
                    "case": case.case_id,
                    "prediction_file": str(case.prediction),
                    "reference_file": str(case.reference),
                    "spacing": list(case.spacing),
                    "metrics": {str(k): _metrics_json(case.metrics[k]) for k in names},
                }
                for case in self.cases
            ],
            "ignored_prediction_files": list(self.ignored_files),
            "reference_cases_without_prediction": list(self.unpredicted_cases),
        }


def _metrics_json(metrics: ClassMetrics) -> dict:
    return {
        "Dice": metrics.dice,
        "HD95": metrics.hd95,
        "TP": metrics.true_positives,
        "FP": metrics.false_positives,
        "FN": metrics.false_negatives,
        "n_pred": metrics.num_predicted,
        "n_ref": metrics.num_reference,
    }


def read_label_names(labels: Path) -> dict[int, str]:
    """Foreground classes of a ``dataset.json``.

    Args:
        labels: A ``dataset.json`` file or a folder holding one (a raw dataset or a plans folder).

    Returns:
        Label value -> name, background (0) left out, sorted by value.

    Raises:
        DatasetError: The file is missing or malformed.
    """
    labels = Path(labels)
    if labels.is_file():
        if labels.name != "dataset.json":
            raise DatasetError(f"{labels}: --labels must be a dataset.json file or a folder holding one")
        labels = labels.parent
    description = read_dataset_json(labels)
    return {value: name for name, value in sorted(description.labels.items(), key=lambda kv: kv[1]) if value != 0}


def _case_id(file_name: str) -> str | None:
    for ending in NIFTI_ENDINGS:
        if file_name.endswith(ending) and not file_name.startswith("."):
            return file_name[: -len(ending)]
    return None


def match_cases(
    prediction_dir: Path,
    reference_dir: Path,
    case_ids: Sequence[str] | None = None,
    *,
    only_predicted: bool = False,
) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pairs every reference label map with the prediction of the same case.

    Args:
        prediction_dir: Folder of predicted ``CASE.nii.gz`` (or ``.nii``) files; other files are ignored.
        reference_dir: Folder of reference label maps.
        case_ids: Evaluate only these reference cases (e.g. a fold's validation cases); default: all.
        only_predicted: Leave out the reference cases without a prediction instead of refusing (nnU-Net's
            ``--chill``); at least one case must have one.

    Returns:
        ([(case id, prediction file, reference file), ...] sorted by case id, names of ignored prediction-folder
        files, reference cases left out for want of a prediction).

    Raises:
        DatasetError: A folder is missing, the reference folder holds no NIfTI file, or predictions are missing.
    """
    prediction_dir, reference_dir = Path(prediction_dir), Path(reference_dir)
    for folder, role in ((prediction_dir, "prediction"), (reference_dir, "reference")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {role} folder not found; pass an existing folder of label maps")
    references = {}
    for path in sorted(reference_dir.iterdir()):
        case_id = _case_id(path.name)
        if case_id is not None and path.is_file():
            references[case_id] = path
    if not references:
        raise DatasetError(f"{reference_dir}: no .nii.gz/.nii label maps found; pass the reference label folder")
    if case_ids is not None:
        unknown = sorted(set(case_ids) - set(references))
        if unknown:
            raise DatasetError(f"{reference_dir}: no reference label map for case(s) {', '.join(unknown[:5])}")
        references = {case_id: references[case_id] for case_id in sorted(case_ids)}
    predictions = {}
    for case_id, reference in references.items():
        # The reference's own ending first, then the other NIfTI ending.
        own = reference.name[len(case_id) :]
        candidates = [prediction_dir / f"{case_id}{e}" for e in (own, *(e for e in NIFTI_ENDINGS if e != own))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            predictions[case_id] = found
    missing = sorted(set(references) - set(predictions))
    if missing and only_predicted and predictions:
        references = {case_id: path for case_id, path in references.items() if case_id in predictions}
    elif missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"{prediction_dir}: no prediction for {len(missing)} of {len(references)} reference case(s) "
            f"of {reference_dir}: {shown}; predict them (expected e.g. {prediction_dir / references[missing[0]].name})"
            + ("" if only_predicted else ", or pass --only-predicted to score the predicted cases only")
        )
    used = {p.name for p in predictions.values()}
    ignored = sorted(p.name for p in prediction_dir.iterdir() if p.name not in used and not p.name.startswith("."))
    pairs = [(case_id, predictions[case_id], path) for case_id, path in sorted(references.items())]
    return pairs, ignored, missing if only_predicted else []


def integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """A label map's values as integers (whole-numbered floats converted); one-line DatasetError otherwise."""
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DatasetError(f"{path}: label values are not all integers; save an integer label map")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise DatasetError(f"{path}: negative label value {int(array.min())}; labels must be 0..K-1")
    return array


def label_values(array: np.ndarray) -> tuple[int, ...]:
    """The label values present in an integer array, ascending."""
    # bincount is one linear pass (np.unique would sort a whole CT volume).
    return tuple(int(v) for v in np.flatnonzero(np.bincount(array.ravel())))


def evaluate_case(job: CaseJob) -> CaseResult:
    """Reads, checks and evaluates one prediction/reference pair.

    Args:
        job: The pair and the classes to evaluate.

    Returns:
        The case's metrics.

    Raises:
        DatasetError: A file is unreadable, the pair differs in shape or affine, or a label value is not allowed.
    """
    prediction = read_volume(job.prediction, case_id=job.case_id, is_label=True)
    reference = read_volume(job.reference, case_id=job.case_id, is_label=True)
    if prediction.geometry.shape != reference.geometry.shape:
        raise DatasetError(
            f"case {job.case_id}: prediction {job.prediction} has shape {prediction.geometry.shape} but reference "
            f"{job.reference} has {reference.geometry.shape}; predict on the reference's grid"
        )
    if not np.allclose(prediction.geometry.affine, reference.geometry.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL):
        difference = float(np.abs(prediction.geometry.affine - reference.geometry.affine).max())
        raise DatasetError(
            f"case {job.case_id}: prediction {job.prediction} and reference {job.reference} differ in affine "
            f"(largest difference {difference:.4g}); write the prediction with the reference's geometry"
        )
    predicted = integer_labels(prediction.array, job.prediction)
    expected = integer_labels(reference.array, job.reference)
    prediction_values, reference_values = label_values(predicted), label_values(expected)
    if job.allowed_values is not None:
        for path, values, role in (
            (job.prediction, prediction_values, "prediction"),
            (job.reference, reference_values, "reference"),
        ):
            unknown = sorted(set(values) - set(job.allowed_values))
            if unknown:
                raise DatasetError(
                    f"case {job.case_id}: {role} {path} contains label value(s) {unknown} not in dataset.json "
                    f"labels {list(job.allowed_values)}; fix the label map or pass the matching --labels"
                )
    class_ids = job.class_ids
    if class_ids is None:
        class_ids = tuple(sorted(v for v in set(prediction_values) | set(reference_values) if v > 0))
    metrics = label_metrics(predicted, expected, class_ids=class_ids, spacing=reference.geometry.spacing)
    return CaseResult(
        case_id=job.case_id,
        prediction=job.prediction,
        reference=job.reference,
        spacing=reference.geometry.spacing,
        metrics=metrics,
        prediction_values=prediction_values,
        reference_values=reference_values,
    )


_ABSENT = ClassMetrics(dice=1.0, hd95=0.0, true_positives=0, false_positives=0, false_negatives=0)


def _check_unknown_predictions(results: list[CaseResult], class_names: dict[int, str]) -> None:
    for result in results:
        unknown = sorted(v for v in result.prediction_values if v > 0 and v not in class_names)
        if unknown:
            raise DatasetError(
                f"case {result.case_id}: prediction {result.prediction} contains label value(s) {unknown} found in "
                f"no reference (labels {sorted(class_names)}); pass --labels dataset.json to declare every class"
            )


def summarize(
    results: list[CaseResult],
    class_names: dict[int, str],
    *,
    prediction_dir: Path,
    reference_dir: Path,
    ignored_files: list[str] | None = None,
    unpredicted_cases: list[str] | None = None,
) -> EvaluationSummary:
    """Per-class means over cases and the foreground mean.

    Args:
        results: Per-case results; a class missing from a case's metrics was absent in both maps.
        class_names: Evaluated classes, value -> name.
        prediction_dir: The prediction folder (recorded).
        reference_dir: The reference folder (recorded).
        ignored_files: Prediction-folder files that were not evaluated (recorded).
        unpredicted_cases: Reference cases left out for want of a prediction (recorded).

    Returns:
        The summary.

    Raises:
        ValueError: ``class_names`` is empty.
    """
    if not class_names:
        raise ValueError("no class to summarise")
    cases = [
        CaseResult(
            case_id=r.case_id,
            prediction=r.prediction,
            reference=r.reference,
            spacing=r.spacing,
            metrics={c: r.metrics.get(c, _ABSENT) for c in class_names},
            prediction_values=r.prediction_values,
            reference_values=r.reference_values,
        )
        for r in sorted(results, key=lambda r: r.case_id)
    ]
    classes = []
    for class_id, name in class_names.items():
        dice = np.array([case.metrics[class_id].dice for case in cases], dtype=np.float64)  # (cases,)
        hd95 = np.array([case.metrics[class_id].hd95 for case in cases], dtype=np.float64)  # (cases,)
        present = sum(case.metrics[class_id].num_reference > 0 for case in cases)
        classes.append(ClassSummary(class_id, name, float(dice.mean()), float(hd95.mean()), len(cases), int(present)))
    return EvaluationSummary(
        prediction_dir=Path(prediction_dir),
        reference_dir=Path(reference_dir),
        cases=cases,
        classes=classes,
        foreground_dice=float(np.mean([c.dice for c in classes])),
        foreground_hd95=float(np.mean([c.hd95 for c in classes])),
        ignored_files=list(ignored_files or []),
        unpredicted_cases=list(unpredicted_cases or []),
    )


def evaluate_folders(
    prediction_dir: Path,
    reference_dir: Path,
    *,
    labels: Path | None = None,
    case_ids: Sequence[str] | None = None,
    only_predicted: bool = False,
    num_workers: int = 2,
    progress: bool = False,
) -> EvaluationSummary:
    """Evaluates every reference case against the prediction of the same name.

    Args:
        prediction_dir: Folder of predicted label maps (``CASE.nii.gz``); other files are ignored.
        reference_dir: Folder of reference label maps.
        labels: ``dataset.json`` (or its folder) declaring the classes; without it, the classes are the
            non-zero values found in the references.
        case_ids: Evaluate only these reference cases; default: every reference case.
        only_predicted: Leave out reference cases without a prediction (recorded in the summary).
        num_workers: Worker processes (0 evaluates in this process).
        progress: Show a progress bar.

    Returns:
        The summary (not yet written; see :func:`write_summary`).

    Raises:
        DatasetError: A missing prediction, an unreadable file, a shape or affine mismatch, a label value not
            declared, or no class to evaluate.
    """
    prediction_dir, reference_dir = Path(prediction_dir), Path(reference_dir)
    pairs, ignored, unpredicted = match_cases(prediction_dir, reference_dir, case_ids, only_predicted=only_predicted)
    declared = read_label_names(labels) if labels is not None else None
    class_ids = tuple(declared) if declared is not None else None
    allowed = (0, *class_ids) if class_ids is not None else None
    jobs = [CaseJob(case_id, prediction, reference, class_ids, allowed) for case_id, prediction, reference in pairs]
    results = map_cases(evaluate_case, jobs, num_workers=num_workers, description="evaluating", progress=progress)
    if declared is None:
        found = sorted({v for r in results for v in r.reference_values if v > 0})
        declared = {value: str(value) for value in found}
        if not declared:  # before the check of the predictions' values: swapped folders fail that one too
            raise DatasetError(
                f"{reference_dir}: the references hold no foreground label; nothing to evaluate. If these are the "
                f"predictions, the folders are swapped: {SWAPPED_HINT} (or pass --labels dataset.json to evaluate "
                "declared classes)"
            )
        _check_unknown_predictions(results, declared)
    if not declared:
        raise DatasetError(f"{labels}: declares no foreground label; nothing to evaluate")
    return summarize(
        results,
        declared,
        prediction_dir=prediction_dir,
        reference_dir=reference_dir,
        ignored_files=ignored,
        unpredicted_cases=unpredicted,
    )


def looks_like_reference_folder(folder: Path) -> bool:
    """Named as nnU-Net names reference label folders (``labelsTr``, ``labelsTs``, ...)."""
    return Path(folder).name.lower().startswith("labels")


def check_summary_destination(path: Path, prediction_dir: Path, reference_dir: Path) -> None:
    """Refuses to write ``summary.json`` into the reference folder, or into a "prediction" folder named like one
    (typed in nnU-Net's order, the references come first and would receive it).

    Raises:
        ConfigError: Either; the message says which and what to do.
    """
    folder = Path(path).parent.resolve()
    if folder == Path(reference_dir).resolve():
        raise ConfigError(
            f"{path}: would be written into the reference folder {reference_dir}, which masksam never writes into; "
            "pass --json with a file elsewhere"
        )
    if folder == Path(prediction_dir).resolve() and looks_like_reference_folder(prediction_dir):
        raise ConfigError(
            f"{prediction_dir}: named like a reference folder, so summary.json is not written into it; if the "
            f"folders are swapped, {SWAPPED_HINT}; otherwise pass --json with a file elsewhere"
        )


def write_summary(summary: EvaluationSummary, path: Path) -> Path:
    """Writes ``summary.json`` atomically (temporary file, then ``os.replace``).

    Args:
        summary: The evaluation summary.
        path: Destination file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(summary.to_json(), path)
    return path
