"""SIGKILL during checkpoint saves, again and again: every restart resumes, nothing stale stays, and
the final weights and log equal those of a run never interrupted."""

import json
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

EPOCHS, ITERS = 3, 2
# kill while each of these is being written: the very first state save, then model files, then a
# later state save (the temporaries are ".<name>.<random>.tmp")
TARGETS = [".train_state.pt.", ".last.safetensors.", ".train_state.pt."]


def command(recipe, data_root, out, *extra):
    return [sys.executable, "-m", "reidkit.cli", "train", "--config", str(recipe), *extra,
            f"data.root={data_root}", f"train.output_dir={out}", "data.height=64", "data.width=32",
            "data.num_workers=0", "data.val_ids=2", "model.options.num_stripes=3",
            "sampler.batch_size=8", "sampler.num_ids=4", "sampler.num_instances=2",
            f"train.epochs={EPOCHS}", f"train.iters_per_epoch={ITERS}", "train.eval_every=1",
            "train.deterministic=true", "train.log_every=1"]


def temporaries(out: Path, prefix: str = ".") -> list[str]:
    try:
        return [n.name for n in out.iterdir() if n.name.startswith(prefix) and n.name.endswith(".tmp")]
    except FileNotFoundError:
        return []


def kill_while_writing(cmd, out: Path, prefix: str, seen: int) -> bool:
    """Run ``cmd``; SIGKILL it while its ``seen``-th (0-based) temporary named ``prefix`` exists.

    Returns True when it was killed, False when it finished first (it must then succeed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    names: set[str] = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        names.update(temporaries(out, prefix))
        if len(names) > seen:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    _, stderr = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), f"a restart failed:\n{stderr[-3000:]}"
    return proc.returncode == -signal.SIGKILL


def test_kill_during_saves_always_resumes_and_leaves_nothing_stale(tmp_path):
    data_root = tmp_path / "data"
    generate(data_root, preset="tiny", num_train_ids=10, num_test_ids=3, images_per_id=4, seed=4)
    recipe = shutil.copy(Path(reidkit.__file__).parent / "configs" / "demo_cpu.yaml", tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(command(recipe, data_root, straight), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    stale_after_kill = 0
    for attempt, prefix in enumerate(TARGETS):
        extra = ("--resume",) if attempt else ()
        # the second state save of a run is a later one: each restart saves again from its epoch
        if kill_while_writing(command(recipe, data_root, killed, *extra), killed, prefix,
                              seen=1 if attempt == 2 else 0):
            stale_after_kill += bool(temporaries(killed))
    assert stale_after_kill >= 1, "no kill landed during a save; the test proved nothing"

    done = subprocess.run(command(recipe, data_root, killed, "--resume"), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert temporaries(killed) == []
    a, b = load_file(straight / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "id_loss" in r] == list(range(1, EPOCHS * ITERS + 1))
    assert [r["epoch"] for r in records if "val_mAP" in r] == list(range(1, EPOCHS + 1))
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["steps"] == EPOCHS * ITERS and len(summary["validation"]) == EPOCHS
