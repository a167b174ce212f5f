"""The ``reidkit`` command as a user runs it, with output going to pipes (as under nohup or CI)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reidkit.data.synthetic import generate

pytestmark = pytest.mark.slow


def reidkit(*args):
    return subprocess.run([sys.executable, "-m", "reidkit.cli", *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def identity_folders(tmp_path_factory):
    """A user's data: one folder per identity, named by person (the files keep their _c<camera>)."""
    synth = tmp_path_factory.mktemp("synth")
    generate(synth, preset="tiny", num_train_ids=8, num_test_ids=2, images_per_id=4, seed=5)
    root = tmp_path_factory.mktemp("people")
    for path in sorted((synth / "bounding_box_train").glob("*.jpg")):
        person = root / f"person{path.name[:4]}"
        person.mkdir(exist_ok=True)
        shutil.copy(path, person / path.name)
    return root


def test_train_on_identity_folders_with_plain_progress_then_refuse_then_force(identity_folders,
                                                                             tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", "demo_cpu", "data.dataset=folder", f"data.root={identity_folders}",
            f"train.output_dir={out}", "data.height=64", "data.width=32", "data.num_workers=0",
            "data.val_ids=2", "model.options.num_stripes=3", "sampler.batch_size=8",
            "sampler.num_ids=4", "sampler.num_instances=2", "train.epochs=2",
            "train.iters_per_epoch=2", "train.eval_every=1"]
    done = reidkit(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    # not a terminal: plain progress lines, validation as it happens, the summary on stdout
    assert "train: 1/4 (25%)" in done.stderr and "train: 4/4 (100%)" in done.stderr
    assert "epoch 1/2 validation: mAP" in done.stderr and "epoch 2/2 validation: mAP" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 4 and [v["epoch"] for v in summary["validation"]] == [1, 2]
    assert "val_rank1" in summary["best_validation"]

    again = reidkit(*args)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already holds a training run" in again.stderr and "--force" in again.stderr
    rows = (out / "metrics.jsonl").read_text().splitlines()

    forced = reidkit(*args, "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "--force: deleted the run" in forced.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(rows)  # not appended
    assert Path(json.loads(forced.stdout)["model"]).is_file()
