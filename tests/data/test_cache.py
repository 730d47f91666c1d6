"""The .npy cache: atomic writes, memory-mapped reads, completeness and up-to-date checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from masksam.data.cache import CachedCase, CaseCache, save_npy_atomic, write_json_atomic
from masksam.errors import DatasetError


def _case(case_id="c1", key="k1") -> CachedCase:
    rng = np.random.default_rng(0)
    return CachedCase(
        case_id,
        rng.normal(size=(2, 3, 8, 8)).astype(np.float32),
        rng.integers(0, 3, (3, 8, 8)).astype(np.uint8),
        np.array([[1, 0, 2, 3]], np.int32),
        {"cache_key": key, "case_id": case_id},
    )


def test_write_read_memory_mapped(tmp_path):
    cache = CaseCache(tmp_path / "cache")
    case = _case()
    cache.write(case)
    back = cache.read("c1")
    assert isinstance(back.image, np.memmap) and isinstance(back.label, np.memmap)
    np.testing.assert_array_equal(back.image, case.image)
    np.testing.assert_array_equal(back.label, case.label)
    np.testing.assert_array_equal(back.foreground, case.foreground)
    assert back.properties == case.properties
    assert cache.case_ids() == ["c1"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize(
    ("remove", "key", "expected"),
    [(None, "k1", True), (None, "other", False), ("c1_seg.npy", "k1", False), ("c1.json", "k1", False)],
    ids=["same-key", "changed-key", "missing-array", "missing-properties"],
)
def test_is_up_to_date(tmp_path, remove, key, expected):
    cache = CaseCache(tmp_path)
    cache.write(_case())
    if remove:
        (tmp_path / remove).unlink()
    assert cache.is_up_to_date("c1", key) is expected


def test_read_missing_case_names_it(tmp_path):
    with pytest.raises(DatasetError, match="case nope.*re-run masksam plan"):
        CaseCache(tmp_path).read("nope")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def half_written(handle, array, allow_pickle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_npy_atomic(np.zeros(3), tmp_path / "a.npy")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic({"a": 1}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
