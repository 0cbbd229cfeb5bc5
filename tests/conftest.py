"""Fixtures only (the values and functions they use live in tests/helpers)."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import config_maker


@pytest.fixture(autouse=True)
def restore_global_rng_states():
    """Every test leaves Python's, NumPy's and torch's global random states as it found them, so that no
    test's outcome depends on which tests ran before it."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    yield
    random.setstate(python)
    np.random.set_state(numpy)
    torch.random.set_rng_state(cpu)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generated once per parameter set)."""
    return tmp_path_factory.mktemp("bof-cache")


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """compose("train", TINY + overrides) writing into a fresh run directory."""
    return config_maker(tmp_path, cache_dir)
