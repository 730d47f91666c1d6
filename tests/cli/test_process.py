"""Process-wide settings of the command-line tool."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masksam.cli.process import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_large_freed_blocks_stay_with_the_process() -> None:
    # After the call, freeing a 200 MB block must not hand it back to the kernel: the resident size of a
    # process that touched it stays high. Without the call glibc unmaps it at once (checked for contrast).
    script = """
import sys
from masksam.cli.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
import numpy as np
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
block = np.ones(200 * 2**20, dtype=np.uint8)
del block
print(rss_mb())
"""
    kept, returned = (
        float(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout)
        for mode in ("keep", "default")
    )
    assert kept > returned + 150, (kept, returned)


def test_returns_a_boolean_everywhere() -> None:
    assert keep_freed_memory() in (True, False)
