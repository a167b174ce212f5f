"""A run killed with SIGKILL mid-epoch and resumed ends with the weights of an uninterrupted run."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import reidkit
from reidkit.data.synthetic import generate

pytestmark = pytest.mark.slow

ITERS = 4


def command(recipe, data_root, out, *extra):
    return [sys.executable, "-m", "reidkit.cli", "train", "--config", str(recipe), *extra,
            f"data.root={data_root}", f"train.output_dir={out}", "data.height=64", "data.width=32",
            "data.num_workers=0", "data.val_ids=2", "model.options.num_stripes=3",
            "sampler.batch_size=8", "sampler.num_ids=4", "sampler.num_instances=2",
            "train.epochs=3", f"train.iters_per_epoch={ITERS}", "train.deterministic=true",
            "train.log_every=1"]


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def steps_logged(out):
    path = out / "metrics.jsonl"
    return path.read_text().count('"id_loss"') if path.exists() else 0


def test_sigkill_mid_epoch_then_resume_matches_a_straight_run(tmp_path):
    data_root = tmp_path / "data"
    generate(data_root, preset="tiny", num_train_ids=10, num_test_ids=3, images_per_id=4, seed=4)
    # a private copy of the recipe: an edit of demo_cpu.yaml while this test runs must not give
    # the straight and the killed run different recipes
    recipe = shutil.copy(Path(reidkit.__file__).parent / "configs" / "demo_cpu.yaml", tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(command(recipe, data_root, straight))

    proc = subprocess.Popen(command(recipe, data_root, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while steps_logged(killed) < ITERS + 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {stderr[-3000:]}"
    assert ITERS < steps_logged(killed) < 3 * ITERS  # killed inside the second or third epoch

    resumed_at = torch.load(killed / "train_state.pt", weights_only=True)["epoch"]
    run(command(recipe, data_root, killed, "--resume"))
    a, b = load_file(straight / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), f"{name} differs (resumed from epoch {resumed_at})"
