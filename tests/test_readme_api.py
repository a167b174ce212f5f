"""The README's "Python API in 30 seconds" runs as shown and prints what the README shows.

The example is run in a folder laid out as ``make demo`` leaves it (a synthetic data set and a
model file); its model is an untrained Pyramid, so the numbers differ from the README's, but every
printed line must have the README's form (numbers masked) and the API's values must be right.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

from reidkit.data.synthetic import generate
from reidkit.models import build_model
from reidkit.models.io import save_model

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Python API in 30 seconds"


def readme_blocks() -> tuple[str, str]:
    """The section's Python code and the output block that follows it."""
    text = README.read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    code, output = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.S)[:2]
    return code, output


def masked(line: str) -> str:
    """A printed line with its numbers (and file names, which hold numbers) masked."""
    line = re.sub(r"\S+\.jpg", "<file>", line)
    return re.sub(r"-?\d+(\.\d+)?", "<n>", line)


@pytest.fixture()
def demo_folder(tmp_path, monkeypatch):
    torch.manual_seed(0)
    generate(tmp_path / "demo-output" / "data", preset="tiny", num_train_ids=6, num_test_ids=10,
             images_per_id=4, seed=3)
    model = build_model("pyramid", num_classes=6, backbone="resnet18", num_stripes=6,
                        last_stride=1).eval()
    model.spec = model.spec.trained_at((96, 48), "bicubic")  # as the demo recipe trains it
    save_model(tmp_path / "demo-output" / "run" / "best.safetensors", model)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_python_api_runs_as_shown(demo_folder):
    code, expected = readme_blocks()
    assert "OUTPUT" not in expected, "the README shows no real output yet"
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102  (our own README)
    lines = printed.getvalue().splitlines()
    assert [masked(line) for line in lines] == [masked(line) for line in expected.splitlines()]
    # the values behind the lines
    model, gallery, result = namespace["model"], namespace["gallery"], namespace["result"]
    assert model.spec.input_size == (96, 48) and model.spec.interpolation == "bicubic"
    assert gallery.dim == 21 * 128 == model.spec.feature_dim
    gallery_files = sorted((demo_folder / "demo-output/data/bounding_box_test").glob("*.jpg"))
    junk = [f for f in gallery_files if f.name.startswith("-1_")]  # pid -1: dropped, as in Market
    assert junk and len(gallery) == len(gallery_files) - len(junk)
    hits = namespace["reidkit"].search(gallery, namespace["query"], k=3)[0]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert 0 <= result.mAP <= 1 and result.num_queries > 0
