"""Tagged model files: masksam's ``torch.save`` dicts, what each tag means, atomic writes, reading by tag.

Every model file masksam writes is a dict with a ``format`` tag and a ``version``. The tags are this layer's
contract (``FORMATS``): each names what the file is and what to do with it, so a file given where another kind is
expected is refused in one line that says where it belongs. Which code rebuilds a model from a file is
registered by the package that owns the model (``register_loader``): MaskSAM's loader by
:mod:`masksam.model_files.masksam_checkpoint`, the U-Net's by :mod:`masksam.baselines`. The loaders are the only
process-wide state here; nothing in this layer imports training, inference or the baselines.

Files are written to a temporary file in the same folder, flushed to disk, then renamed over the target, so a
killed process or a full disk never leaves a truncated ``checkpoint_latest.pt``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from masksam.errors import CheckpointError


@dataclass(frozen=True)
class FileFormat:
    """One tag of masksam's model files.

    Attributes:
        tag: The file's ``format`` value.
        version: The format version this masksam writes (and the only one it reads).
        kind: What such a file is, with its article ("a MaskSAM checkpoint").
        use: What to do with it (said when it is given where another kind is expected).
        weights_only: ``torch.load``'s safe mode (only for files without Python objects such as RNG states).
        not_found: What to do when the file is missing.
        foreign: What to do with a file that carries no tag of ours.
        old_versions: Why an older version is refused, and what to do, by version.
    """

    tag: str
    version: int
    kind: str
    use: str
    weights_only: bool
    not_found: str
    foreign: str
    old_versions: Mapping[int, str] = field(default_factory=dict)


MASKSAM_CHECKPOINT = FileFormat(
    tag="masksam-training-checkpoint",
    # 2: the backbone's own intensity mapping, the gated mask prompt and silent classifier tokens (a version-1 model
    # computes something else with the same weights, so it is refused rather than silently misread).
    version=2,
    kind="a MaskSAM checkpoint",
    use="predict with 'masksam predict -m MODEL_DIR'",
    weights_only=False,  # holds RNG states
    not_found="train a model first ('masksam train') or check the path",
    foreign="official SAM weights go to --checkpoint of 'masksam train'",
    old_versions={
        1: "it was trained before masksam fed the backbone its own intensity scale and gated the mask prompt, so its "
        "weights do not fit today's model; train it again"
    },
)
UNET_MODEL = FileFormat(
    tag="masksam-unet-baseline",
    version=1,
    kind="a U-Net baseline model file",
    use="predict with masksam.baselines.predict_unet",
    weights_only=True,
    not_found="train one first (train_unet) or check the path",
    foreign="pass a U-Net run's checkpoint_final.pt",
)
# Every tag masksam writes, by tag.
FORMATS: Mapping[str, FileFormat] = {file_format.tag: file_format for file_format in (MASKSAM_CHECKPOINT, UNET_MODEL)}

# Rebuilds the model of a file: loader(path, device=..., **options) -> the loaded model with its plans.
ModelLoader = Callable[..., Any]
_LOADERS: dict[str, ModelLoader] = {}


def register_loader(tag: str, loader: ModelLoader) -> None:
    """Makes ``loader`` the reader of files tagged ``tag`` (called by the package that owns the model).

    Raises:
        ValueError: ``tag`` is not one of ``FORMATS``, or another loader is registered for it.
    """
    if tag not in FORMATS:
        raise ValueError(f"unknown model file tag '{tag}'; add its FileFormat to masksam.model_files.tagged.FORMATS")
    registered = _LOADERS.setdefault(tag, loader)
    if _qualified_name(registered) != _qualified_name(loader):  # the same function again (a reload) is fine
        raise ValueError(f"model file tag '{tag}' already has a loader ({_qualified_name(registered)})")
    _LOADERS[tag] = loader


def _qualified_name(function: ModelLoader) -> str:
    return f"{function.__module__}.{getattr(function, '__qualname__', repr(function))}"


def _to_cpu(value: Any) -> Any:
    """Tensors anywhere inside dicts/lists moved to CPU, so a GPU checkpoint loads on a CPU-only machine."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _torch_save(payload: Any, handle: Any) -> None:
    """``torch.save`` that lets a Ctrl-C through as KeyboardInterrupt.

    A KeyboardInterrupt raised while torch writes a storage leaves its zip writer mid-record, and the writer's
    cleanup then raises a RuntimeError ("unexpected pos ...") that hides the interrupt: the caller would report a
    crash instead of an interruption.
    """
    try:
        torch.save(payload, handle)
    except RuntimeError as error:
        if isinstance(error.__context__, KeyboardInterrupt):
            raise error.__context__ from None
        raise


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder, fsync, then ``os.replace``.

    Raises:
        CheckpointError: The file could not be written (e.g. a full disk); the previous file is untouched.
    """
    from masksam.files import default_file_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporaries left by a killed writer (one writer per file: rank 0) are garbage.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), default_file_mode())  # not mkstemp's 0o600: readable as the umask allows
            _torch_save(_to_cpu(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise CheckpointError(
            f"{path}: could not write the checkpoint ({error.strerror or error}); free disk space or choose "
            "another output folder — the previous checkpoint is unchanged"
        ) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path: Path, what: str, *, weights_only: bool) -> Any:
    """``torch.load`` onto the CPU; a truncated or foreign file is a one-line CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not readable as {what} ({type(error).__name__}); it may be truncated or foreign"
        ) from None


def _check_version(payload: dict[str, Any], file_format: FileFormat, path: Path) -> None:
    found = payload.get("version")
    if found != file_format.version:
        why = file_format.old_versions.get(found, "use the masksam version that wrote it")
        raise CheckpointError(
            f"{path}: {file_format.kind.removeprefix('a ')} format version {found} is not {file_format.version}; {why}"
        )


def read_tagged_file(path: str | Path, file_format: FileFormat) -> dict[str, Any]:
    """Reads one of masksam's ``torch.save`` dicts onto the CPU, checking its format tag and version.

    Args:
        path: The file.
        file_format: What the file must be.

    Raises:
        CheckpointError: Missing, unreadable, another of our formats, untagged, or another version; one line.
    """
    path = Path(path)
    what = file_format.kind
    if not path.is_file():
        raise CheckpointError(f"{path}: {what.removeprefix('a ')} not found; {file_format.not_found}")
    payload = _load(path, what, weights_only=file_format.weights_only)
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != file_format.tag:
        if found in FORMATS:
            other = FORMATS[found]
            raise CheckpointError(f"{path}: is {other.kind}, not {what}; {other.use}")
        raise CheckpointError(f"{path}: not {what} (no '{file_format.tag}' tag); {file_format.foreign}")
    _check_version(payload, file_format, path)
    return payload


def file_format_of(path: str | Path) -> FileFormat:
    """The format of a model file, by its tag.

    Raises:
        CheckpointError: Missing or unreadable file, or a tag masksam does not know; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found; check the path")
    # A MaskSAM checkpoint holds RNG states (Python objects), so the tag is read without weights_only.
    payload = _load(path, "a masksam model file", weights_only=False)
    found = payload.get("format") if isinstance(payload, dict) else None
    if found not in FORMATS:
        tag = "no format tag" if found is None else f"unknown format tag {found!r}"
        raise CheckpointError(
            f"{path}: not a masksam model file ({tag}; masksam writes {', '.join(FORMATS)}); pass a "
            "checkpoint_*.pt of 'masksam train' or train_unet"
        )
    return FORMATS[found]


def load_model_file(path: str | Path, **options: Any) -> Any:
    """Rebuilds the model of any of masksam's model files with the loader registered for its tag.

    Args:
        path: The file.
        options: Passed to the loader (``device``; MaskSAM: ``backbone_checkpoint``).

    Returns:
        What the loader returns (MaskSAM: ``TrainedModel``; U-Net: ``TrainedUNet``).

    Raises:
        CheckpointError: Missing, unreadable or unknown file, or a format whose package is not imported.
    """
    file_format = file_format_of(path)
    loader = _LOADERS.get(file_format.tag)
    if loader is None:
        raise CheckpointError(
            f"{path}: is {file_format.kind}, whose loader is not registered (import its package first); "
            f"{file_format.use}"
        )
    return loader(path, **options)


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading where ``expected`` (a model's state dict) is wanted, in a few words; None
    when every tensor is there with its shape and nothing else is."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    parts = [
        f"{label} {len(keys)} (e.g. {keys[0]})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    return ", ".join(parts) or None
