"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The Dresden subset of prnu-python (6 Nikon cameras); CI must have it."""
    if not (TESTDATA / "ff-jpg").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"camera test data missing at {TESTDATA}")
        pytest.skip(f"camera test data not found at {TESTDATA} (set DIPPAS_TESTDATA)")
    return TESTDATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
