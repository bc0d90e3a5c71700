"""Shared fixtures."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: one intra-op thread is faster (restored afterwards).

    A test module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run_rlur(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rlur.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def rlur_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``rlur_cli("simulate", ...)`` runs the CLI in a subprocess (one thread) and returns the process."""
    return _run_rlur


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo ranking checkpoint (random-init policy, version ``v1``), one per test module."""
    from rlur.serving.testing import write_demo_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    write_demo_checkpoint(d, seed=0, version="v1")
    return d
