"""`reidkit extract` under torchrun: two gloo processes write the file one process writes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from reidkit.data.synthetic import generate
from reidkit.models import build_model
from reidkit.models.io import save_model
from reidkit.retrieval.features import load_features

pytestmark = pytest.mark.slow


def test_two_processes_equal_one(tmp_path):
    generate(tmp_path / "data", preset="tiny", seed=4)
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=4, backbone="resnet18", num_stripes=3)
    save_model(tmp_path / "m.safetensors", model, {"input_size": [64, 32]})
    base = ["--checkpoint", str(tmp_path / "m.safetensors"), "--images", str(tmp_path / "data"),
            "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": os.environ.get("CI", "")}
    single = subprocess.run([sys.executable, "-m", "reidkit.cli", "extract", *base,
                             "--out", str(tmp_path / "one.safetensors")],
                            capture_output=True, text=True, env=env, timeout=240)
    assert single.returncode == 0, single.stderr
    ranked = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", "-m", "reidkit.cli", "extract", *base,
                             "--out", str(tmp_path / "two.safetensors")],
                            capture_output=True, text=True, env=env, timeout=240)
    assert ranked.returncode == 0, ranked.stderr
    assert "(2 processes)" in ranked.stdout
    one, two = (load_features(tmp_path / f"{n}.safetensors") for n in ("one", "two"))
    assert two.paths == one.paths and len(one) > 8
    assert np.array_equal(two.pids, one.pids) and np.array_equal(two.camids, one.camids)
    np.testing.assert_allclose(two.features, one.features, rtol=1e-5, atol=1e-5)
    assert two.meta == one.meta
    assert sorted(p.name for p in tmp_path.glob("two*")) == ["two.safetensors"]  # shards removed
