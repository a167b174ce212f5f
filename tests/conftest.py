"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder per test module for many thousands of empty files (fake data set trees).

    RAM-backed /dev/shm where there is one, since creating tens of thousands of files is slow on a
    busy disk; else pytest's temporary folder. The /dev/shm folder is removed after the module.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="reidkit-test-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic Market-style set (10 training ids of 4 images) for training tests."""
    from reidkit.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, preset="tiny", num_train_ids=10, num_test_ids=4, images_per_id=4, seed=1)
    return root
