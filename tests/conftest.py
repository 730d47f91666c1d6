"""Fixtures every test gets."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def cpu_bf16_is_slow(monkeypatch):
    """``amp auto`` stays float32 on the CPU in every test, whatever this machine's bf16 speed: results do not
    depend on whether CI runs on an AMX CPU. Tests of the measured choice patch ``cpu_bf16_speedup`` themselves."""
    monkeypatch.setattr("masksam.precision.cpu_bf16_speedup", lambda *args, **kwargs: 1.0)
