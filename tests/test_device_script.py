"""benchmarks/device.sh, the GPU check, runs end to end on the CPU in its dry mode."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_device_script_dry_run(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "device.sh"), "--dry-run"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "input_path_dry_run.md").read_text()
    for row in ("bare step", "loader (0 workers)", "cache (batched augmentation"):
        assert f"| {row}" in table
