"""How the process keeps or returns freed memory (glibc malloc settings)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masksam import memory
from masksam.memory import (
    FreedMemoryGuard,
    keep_freed_memory,
    machine_memory_bytes,
    peak_resident_bytes,
    release_free_memory,
    return_freed_memory,
)

# Prelude of the subprocess scripts below: the resident size of the running process in MB.
_RSS_MB = """
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
"""

_RSS_AFTER_FREE = (
    _RSS_MB
    + """
import sys
from masksam.memory import keep_freed_memory, return_freed_memory
mode = sys.argv[1]
if mode != "default":
    assert keep_freed_memory()
import numpy as np
block = np.ones(200 * 2**20, dtype=np.uint8)
del block
if mode == "keep-then-return":
    assert return_freed_memory()
    block = np.ones(200 * 2**20, dtype=np.uint8)  # mapped again, and unmapped when freed
    del block
print(rss_mb())
"""
)


def _rss_after_free(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True, text=True, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_large_freed_blocks_stay_with_the_process_until_returned() -> None:
    # Kept: a freed 200 MB block stays resident. Default glibc and kept-then-returned: it goes back at once.
    kept, returned, default = (_rss_after_free(mode) for mode in ("keep", "keep-then-return", "default"))
    assert kept > default + 150, (kept, default)
    assert kept > returned + 150, (kept, returned)


_RSS_BEFORE_AND_AFTER_RELEASE = (
    _RSS_MB
    + """
import numpy as np
from masksam.memory import release_free_memory, return_freed_memory
assert return_freed_memory()
blocks = [np.ones(20 * 2**20, dtype=np.uint8) for _ in range(40)]  # 800 MB of heap blocks under 32 MiB
pin = np.ones(2**20, dtype=np.uint8)  # a live block above them: glibc cannot trim the heap's top
del blocks
before = rss_mb()
assert release_free_memory()
print(before, rss_mb())
"""
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_free_pages_inside_the_heap_go_back_on_release() -> None:
    # What a forked data worker would otherwise inherit and, by copy-on-write, double.
    done = subprocess.run(
        [sys.executable, "-c", _RSS_BEFORE_AND_AFTER_RELEASE], capture_output=True, text=True, check=True
    )
    before, after = map(float, done.stdout.split())
    assert before > after + 600, (before, after)


_SETTINGS_TAKEN = """
from masksam.memory import keep_freed_memory, release_free_memory, return_freed_memory
print(keep_freed_memory(), return_freed_memory(), release_free_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_glibc_takes_the_settings() -> None:
    # In a child process: the settings hold for the whole process, and this one goes on to run other tests.
    done = subprocess.run([sys.executable, "-c", _SETTINGS_TAKEN], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "True"]


def test_without_glibc_nothing_changes_and_false_is_returned(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert keep_freed_memory() is False
    assert return_freed_memory() is False
    assert release_free_memory() is False


def test_guard_hands_memory_back_once_past_its_limit(monkeypatch) -> None:
    handed_back: list[bool] = []
    monkeypatch.setattr(memory, "return_freed_memory", lambda: handed_back.append(True) or True)  # not this process
    # This process's peak is far above 2 bytes × 0.5 and far below 1 PiB × 0.5.
    assert peak_resident_bytes() > 1 << 20
    roomy = FreedMemoryGuard(peak_limit=0.5, machine_bytes=1 << 50)
    assert not roomy.check() and not roomy.returned and handed_back == []
    full = FreedMemoryGuard(peak_limit=0.5, machine_bytes=2)
    assert full.check() and full.returned and handed_back == [True]
    assert not full.check() and handed_back == [True]  # only once


def test_guard_measures_against_this_machine_by_default() -> None:
    guard = FreedMemoryGuard()
    assert machine_memory_bytes() > 1 << 28
    assert guard.limit_bytes == pytest.approx(0.5 * machine_memory_bytes())


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_guard_refuses_a_share_outside_zero_one(share: float) -> None:
    with pytest.raises(ValueError, match="peak_limit"):
        FreedMemoryGuard(peak_limit=share)
