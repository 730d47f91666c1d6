"""The preprocessed-case cache: uncompressed ``.npy`` files read through memory maps.

Per case, in the cache folder::

    CASE.npy          (C, T, H, W) float32 image
    CASE_seg.npy      (T, H, W) uint8 (int16 if K > 255) label
    CASE_fg.npy       (M, 4) int32 rows (class, t, h, w): sampled voxels of each foreground class
    CASE.json         properties (geometry, crop box, shapes, cache key); written last = case complete

Why ``.npy`` + ``np.load(mmap_mode="r")``: a training patch touches only the pages it covers, with no
decompression; measured against blosc2 (nnU-Net's compressed format) in ``benchmarks/bench_data_loader.py``.
Every file is written to a temporary name and renamed (``os.replace``), so a crash never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masksam.errors import DatasetError
from masksam.files import create_temporary_file


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return create_temporary_file(path)


def write_json_atomic(data: dict | list, path: Path) -> None:
    """Writes JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    """Saves ``array`` as ``.npy`` through a temporary file and ``os.replace``."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass
class CachedCase:
    """One preprocessed case as stored in the cache.

    Attributes:
        case_id: Case id.
        image: (C, T, H, W) float32, memory-mapped when loaded with ``mmap=True``.
        label: (T, H, W) integer label map (memory-mapped likewise).
        foreground: (M, 4) int32 rows (class, t, h, w) of sampled foreground voxels.
        properties: Geometry and bookkeeping (see ``preprocessing.preprocess_case``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    foreground: np.ndarray
    properties: dict


class CaseCache:
    """Reads and writes preprocessed cases in one folder.

    Args:
        folder: The cache folder (created on first write).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def case_files(self, case_id: str) -> tuple[Path, Path, Path, Path]:
        """(image, label, foreground, properties) files of a case, properties last (written last)."""
        return self._paths(case_id)

    def _paths(self, case_id: str) -> tuple[Path, Path, Path, Path]:
        base = self.folder / case_id
        return (
            base.with_name(f"{case_id}.npy"),
            base.with_name(f"{case_id}_seg.npy"),
            base.with_name(f"{case_id}_fg.npy"),
            base.with_name(f"{case_id}.json"),
        )

    def case_ids(self) -> list[str]:
        """Ids of complete cases (those with a properties file), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def is_up_to_date(self, case_id: str, cache_key: str) -> bool:
        """True if the case is complete and was written with ``cache_key`` (same plans and source files)."""
        image, label, foreground, properties = self._paths(case_id)
        if not (properties.is_file() and image.is_file() and label.is_file() and foreground.is_file()):
            return False
        try:
            return json.loads(properties.read_text()).get("cache_key") == cache_key
        except (OSError, json.JSONDecodeError):
            return False

    def write(self, case: CachedCase) -> None:
        """Writes a case atomically, properties last (their presence marks the case complete)."""
        image, label, foreground, properties = self._paths(case.case_id)
        properties.unlink(missing_ok=True)  # incomplete until the new properties land
        save_npy_atomic(case.image.astype(np.float32, copy=False), image)
        save_npy_atomic(case.label, label)
        save_npy_atomic(case.foreground.astype(np.int32, copy=False), foreground)
        write_json_atomic(case.properties, properties)

    def read(self, case_id: str, *, mmap: bool = True) -> CachedCase:
        """Reads a case; with ``mmap`` the image and label are memory maps (patches read lazily).

        Raises:
            DatasetError: The case is not in the cache or a file is unreadable.
        """
        image, label, foreground, properties = self._paths(case_id)
        mode = "r" if mmap else None
        try:
            return CachedCase(
                case_id=case_id,
                image=np.load(image, mmap_mode=mode, allow_pickle=False),
                label=np.load(label, mmap_mode=mode, allow_pickle=False),
                foreground=np.load(foreground, allow_pickle=False),
                properties=json.loads(properties.read_text()),
            )
        except (OSError, ValueError) as error:
            raise DatasetError(
                f"case {case_id}, file {self.folder}: cached case missing or unreadable ({error}); re-run masksam plan"
            ) from error
