"""The HTML report: plots of a run's log, the results table and ranked lists."""

import json

import numpy as np
from PIL import Image

from reidkit.data.dataset import ImageRecord
from reidkit.report import write_report


def test_report_page_holds_the_table_plots_and_ranked_lists(tmp_path):
    log = tmp_path / "metrics.jsonl"
    steps = [{"step": i, "epoch": 0, "id_loss": 5.0 - i / 10, "tp_loss": None if i == 2 else 1.0,
              "objective": "id" if i < 3 else "joint", "w_id": 1.0, "w_tp": 0.0 if i < 3 else 1.0}
             for i in range(1, 9)]
    log.write_text("\n".join(json.dumps(r) for r in [*steps, {"epoch": 1, "step": 8, "val_mAP": 0.5}]))
    records = []
    for i, (pid, cam) in enumerate([(1, 0), (2, 0), (1, 1), (2, 1), (3, 1), (-1, 1)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 16), (40 * i, 0, 0)).save(path)
        records.append(ImageRecord(str(path), pid, cam))
    query, gallery = records[:2], records[2:]
    distmat = np.array([[0.1, 0.5, 0.7, 0.0], [0.6, 0.2, 0.3, 0.0]])
    page = write_report(tmp_path / "report", title="t <b>", metrics_path=log, distmat=distmat,
                        query=query, gallery=gallery, num_examples=2,
                        results={"model": {"mAP": 1.0, "rank1": 1.0, "rank5": 1.0, "rank10": 1.0,
                                           "mINP": 1.0}},
                        cmc={"model": np.ones(3)}, notes=["a note"])
    html = page.read_text()
    assert "t &lt;b&gt;" in html and "<td>100.0</td>" in html and "a note" in html
    for name in ("losses.png", "dynamic.png", "cmc.png", "ranked_0.png", "ranked_1.png"):
        assert f'src="{name}"' in html
        assert Image.open(page.parent / name).size[0] > 0
    # query + 3 kept gallery images (junk -1 dropped): 4 tiles of (64 + 2 * 4) pixels + a gap;
    # below each picture two caption lines of 12 pixels and a 4-pixel margin
    assert Image.open(page.parent / "ranked_0.png").size == (4 * 72 + 12, 128 + 8 + 4 + 12 * 2)


def test_step_axes_have_whole_number_ticks(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from reidkit.report import plot_training

    ticks = []
    save = Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        ticks.extend(t for ax in fig.axes for t in ax.get_xticks())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    # three steps: matplotlib's default ticks would be 1.00, 1.25, ... 3.00
    steps = [{"step": i, "epoch": 1, "id_loss": 2.0 / i, "tp_loss": 1.0, "objective": "joint",
              "w_id": 1.0, "w_tp": 1.0} for i in (1, 2, 3)]
    assert plot_training(steps, tmp_path) == ["losses.png", "dynamic.png"]
    assert ticks and all(float(t).is_integer() for t in ticks)
