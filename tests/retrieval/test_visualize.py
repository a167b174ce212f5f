"""Pictures: captions with the data set's own names and sightings, and the CMC plot's rank axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from reidkit.data.dataset import ImageRecord, Sighting
from reidkit.retrieval.visualize import caption, cmc_figure, plot_cmc, ranked_list_image


def test_captions_use_the_data_sets_names() -> None:
    # Issue 13 item 12: a _c6 file was captioned "cam 5" (the 0-based camid).
    assert caption(ImageRecord("x/0002_c6s1_000451_03.jpg", 2, 5)) == "cam 6 id 2"
    assert caption(ImageRecord("g/alice/a.jpg", 0, 3, camera="door", identity="alice")) == \
        "cam door id alice"
    assert caption(ImageRecord("unlabelled.jpg", -1, 7)) == "cam 7"
    seen = Sighting("v.avi", "v", 123, 12.3, (0, 0, 4, 8), 0.9, 4)
    assert caption(ImageRecord("c.jpg", 4, 0, camera="v", sighting=seen)) == "cam v id 4\n12.3s f123"


def test_ranked_list_image_grows_for_longer_captions(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 20), "red").save(path)
    plain = ranked_list_image(ImageRecord(str(path), 1, 0), [ImageRecord(str(path), 1, 1)], [0.5])
    seen = Sighting("v.avi", "v", 3, 0.3, (0, 0, 4, 8), 0.9, 1)
    footage = ranked_list_image(ImageRecord(str(path), 1, 0, sighting=seen),
                                [ImageRecord(str(path), 1, 1, sighting=seen)], [0.5])
    assert plain.size == (2 * 72 + 12, 136 + 4 + 12 * 2)  # "#1 d=0.50" and "cam 2 id 1"
    assert footage.size == (plain.width, plain.height + 12)


def test_cmc_ticks_are_whole_ranks(tmp_path: Path) -> None:
    # Issue 13 item 14: the CMC plot (also the report's) had ticks at ranks 2.5, 7.5, ...
    import matplotlib.pyplot as plt

    for max_rank in (5, 10, 20, 50):
        fig = cmc_figure({"m": np.linspace(0.5, 1, 50)}, max_rank=max_rank)
        ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= max_rank]
        plt.close(fig)
        assert ticks and all(float(t).is_integer() for t in ticks), (max_rank, ticks)
    plot_cmc({"m": np.linspace(0.5, 1, 20)}, tmp_path / "cmc.png")
    assert Image.open(tmp_path / "cmc.png").size == (550, 385)
