"""One preprocessed cache per dataset and plans, built whole and published by a rename.

The cache folder is named by the plans' preprocessing key (``preprocessed_<key>``: a hash of the spacing,
transpose, normalisation and preprocessing version), so plans that preprocess differently never share, mix or
silently reuse a folder, and a folder in use by a running training is never rewritten under it. Each case is also
keyed by the plans and its raw files' size and mtime (``preprocessing.cache_key``).

A cache is built in a temporary folder beside its final name (up-to-date cases of an existing folder are
hard-linked into it, as are those of the folder an older ``plans.json`` names, so only what changed is
preprocessed again) and renamed into place when every case is
written: a process that finds ``preprocessed_<key>`` finds every case, never half a cache. Two processes that build
the same cache at once each build their own copy; the first rename wins and the other copy is dropped.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from masksam.data.cache import CaseCache
from masksam.data.io import CaseFiles
from masksam.data.parallel import map_cases
from masksam.data.plans import Plans
from masksam.data.preprocessing import cache_key, preprocess_training_case, preprocessing_key
from masksam.files import create_temporary_folder


@dataclass(frozen=True)
class CacheResult:
    """What ``build_cache`` did.

    Attributes:
        folder: The complete cache folder.
        written: Cases preprocessed now.
        skipped: Cases already up to date (kept or hard-linked).
    """

    folder: Path
    written: int
    skipped: int


def cache_folder_name(plans: Plans) -> str:
    """``preprocessed_<key>``: the cache folder of these plans, inside the plans folder."""
    return f"preprocessed_{preprocessing_key(plans)}"


def stale_cases(cases: Sequence[CaseFiles], plans: Plans, folder: Path) -> list[CaseFiles]:
    """The cases that ``folder`` lacks, or holds from other plans or other raw files."""
    cache = CaseCache(folder)
    stale = []
    for case in cases:
        try:
            up_to_date = cache.is_up_to_date(case.case_id, cache_key(case, plans))
        except OSError:  # a raw file is gone: preprocessing it will say which
            up_to_date = False
        if not up_to_date:
            stale.append(case)
    return stale


def build_cache(
    cases: Sequence[CaseFiles],
    plans: Plans,
    plans_dir: Path,
    *,
    reuse_from: Path | None = None,
    seed: int = 12345,
    num_workers: int = 2,
    progress: bool = True,
) -> CacheResult:
    """Makes ``plans_dir/cache_folder_name(plans)`` hold every case, preprocessed under ``plans``.

    Args:
        cases: The dataset's training cases.
        plans: The plans to preprocess with.
        plans_dir: The plans folder (created if missing).
        reuse_from: Another cache folder whose up-to-date cases are linked rather than preprocessed again (the
            folder an older ``plans.json`` names).
        seed: Seed of the foreground samples (case i uses ``seed + i``).
        num_workers: Worker processes.
        progress: Show a progress bar.

    Raises:
        DatasetError: A raw file is unreadable (nothing is published).
    """
    plans_dir = Path(plans_dir)
    folder = plans_dir / cache_folder_name(plans)
    missing = stale_cases(cases, plans, folder)
    if not missing:
        return CacheResult(folder, written=0, skipped=len(cases))
    missing_ids = {case.case_id for case in missing}
    elsewhere = set()
    if reuse_from is not None and Path(reuse_from) != folder:
        elsewhere = missing_ids - {case.case_id for case in stale_cases(missing, plans, Path(reuse_from))}
    plans_dir.mkdir(parents=True, exist_ok=True)
    partial = create_temporary_folder(folder)  # .preprocessed_<key>.XXXXXXXX, beside its final name
    try:
        for case in cases:
            if case.case_id not in missing_ids:
                _link_case(CaseCache(folder), CaseCache(partial), case.case_id)
            elif case.case_id in elsewhere:
                _link_case(CaseCache(Path(reuse_from)), CaseCache(partial), case.case_id)
        jobs = [
            (case, plans, partial, seed + index)
            for index, case in enumerate(cases)
            if case.case_id in missing_ids - elsewhere
        ]
        map_cases(
            preprocess_training_case, jobs, num_workers=num_workers, description="preprocessing", progress=progress
        )
        _publish(partial, folder, cases, plans)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return CacheResult(folder, written=len(jobs), skipped=len(cases) - len(jobs))


def _link_case(source: CaseCache, target: CaseCache, case_id: str) -> None:
    """Hard-links (or, where links are impossible, copies) a complete case into another cache folder.

    Cache files are only ever replaced by a rename, never written in place, so sharing them is safe.
    """
    for source_file, target_file in zip(source.case_files(case_id), target.case_files(case_id), strict=True):
        try:
            os.link(source_file, target_file)
        except OSError:
            shutil.copy2(source_file, target_file)


def _publish(partial: Path, folder: Path, cases: Sequence[CaseFiles], plans: Plans) -> None:
    """Renames the complete ``partial`` to ``folder``. If ``folder`` appeared meanwhile (another process built
    it), it is kept when complete, and otherwise swapped out for ``partial`` and removed."""
    try:
        os.rename(partial, folder)  # atomic; refused when folder exists and is not empty
        return
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if not stale_cases(cases, plans, folder):
        return  # another process published the same cache first
    retired = folder.with_name(f".{folder.name}.retired.{secrets.token_hex(4)}")
    os.rename(folder, retired)
    os.rename(partial, folder)
    shutil.rmtree(retired, ignore_errors=True)
