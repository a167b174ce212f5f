"""Multi-split protocols: per-split CMC against a straightforward reference, averaging, tables."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reidkit.config import load_config
from reidkit.data import load_dataset
from reidkit.models.spec import ModelSpec
from reidkit.training import protocols
from reidkit.training.protocols import ProtocolResult, SplitResult, evaluate_split, run_protocol

NUM_PERSONS = 12


class MeanGrey(nn.Module):
    """A 1-d feature: the image's mean intensity, so distances are known from the pixel values."""

    spec = ModelSpec(feature_dim=1, mean=None, std=None)  # pixel values as they are

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None]


def grey(pid: int, cam: int) -> int:
    # camera B shifts some persons' brightness so that several queries miss at rank 1
    return 20 * pid + (0 if cam == 0 else [0, 13, -27, 8, 31, -12][pid % 6])


@pytest.fixture(scope="module")
def viper_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("viper")
    for cam, folder in enumerate(("cam_a", "cam_b")):
        (root / folder).mkdir()
        for pid in range(NUM_PERSONS):
            Image.new("RGB", (8, 16), (grey(pid, cam),) * 3).save(root / folder / f"{pid:03d}_0.png")
    return root


def reference_cmc(query_pids, gallery_pids, ranks):
    """Rank of each query's true match by |grey difference|, counted straightforwardly."""
    hits = []
    for q in query_pids:
        d = [abs(grey(q, 0) - grey(g, 1)) for g in gallery_pids]
        true = d[gallery_pids.index(q)]
        hits.append(1 + sum(x < true for x in d))
    return {r: float(np.mean([h <= r for h in hits])) for r in ranks}


def test_evaluate_split_matches_the_reference(viper_root):
    dataset = load_dataset("viper", viper_root, split=3)
    result = evaluate_split(MeanGrey(), dataset, size=(16, 8), ranks=(1, 2, 3, 20))
    expected = reference_cmc([r.pid for r in dataset.query], [r.pid for r in dataset.gallery],
                             (1, 2, 3, 20))
    assert result.cmc == pytest.approx(expected)
    assert result.cmc[1] < 1.0 and result.cmc[20] == 1.0  # 6 gallery images: rank 20 is all
    assert (result.split, result.num_queries) == (3, NUM_PERSONS // 2)


def test_run_protocol_averages_the_splits(viper_root, tmp_path, monkeypatch):
    monkeypatch.setattr(protocols, "load_model", lambda path, map_location: MeanGrey())
    cfg = load_config("mtdnet_viper", [f"data.root={viper_root}", f"train.output_dir={tmp_path}",
                                       "data.height=16", "data.width=8", "train.device=cpu",
                                       "data.num_workers=0"])
    table = run_protocol(cfg, splits=[0, 4, 7], checkpoint=tmp_path / "split{split}.safetensors")
    assert [s.split for s in table.splits] == [0, 4, 7]
    assert [s.model for s in table.splits] == [str(tmp_path / f"split{i}.safetensors")
                                               for i in (0, 4, 7)]
    per_split = []
    for split in (0, 4, 7):
        ds = load_dataset("viper", viper_root, split=split)
        per_split.append(reference_cmc([r.pid for r in ds.query], [r.pid for r in ds.gallery],
                                       (1, 5, 10, 20)))
    assert len({tuple(c.values()) for c in per_split}) > 1  # the splits really differ
    for r in (1, 5, 10, 20):
        assert table.mean[f"rank{r}"] == pytest.approx(np.mean([c[r] for c in per_split]))
    saved = json.loads((tmp_path / "protocol.json").read_text())
    assert saved["mean"]["rank1"] == pytest.approx(table.mean["rank1"])
    with pytest.raises(ValueError, match="splits 0..9"):
        run_protocol(cfg, splits=[10], checkpoint="x")


def test_mean_std_and_markdown_by_hand():
    table = ProtocolResult("viper", [
        SplitResult(0, {1: 0.5, 5: 0.75, 10: 0.875, 20: 1.0}, 0.6, 8),
        SplitResult(1, {1: 0.25, 5: 0.5, 10: 0.75, 20: 1.0}, 0.4, 8),
        SplitResult(2, {1: 0.0, 5: 0.25, 10: 1.0, 20: 1.0}, 0.2, 8),
    ])
    assert table.mean == pytest.approx({"rank1": 0.25, "rank5": 0.5, "rank10": 0.875,
                                        "rank20": 1.0, "mAP": 0.4})
    assert table.std["rank1"] == pytest.approx(np.sqrt((0.25**2 + 0 + 0.25**2) / 3))
    lines = table.as_markdown().splitlines()
    assert lines[0] == "| split | rank-1 | rank-5 | rank-10 | rank-20 | mAP |"
    assert lines[2] == "| 0 | 50.00 | 75.00 | 87.50 | 100.00 | 60.00 |"
    assert lines[-1].startswith("| mean (3 splits) | **25.00** ± 20.41 | **50.00** ± 20.41 |")


def test_all_splits_resume_continues_each_started_split(viper_root, tmp_path, monkeypatch):
    calls = []

    class FakeTrainer:
        def __init__(self, cfg, resume):
            self.cfg, self.resume = cfg, resume

        def fit(self):
            calls.append((self.cfg.data.options["split"], self.resume))
            return {"model": str(Path(self.cfg.train.output_dir) / "last.safetensors")}

    monkeypatch.setattr(protocols, "build_trainer",
                        lambda cfg, resume, console: FakeTrainer(cfg, resume))
    monkeypatch.setattr(protocols, "load_model", lambda path, map_location: MeanGrey())
    cfg = load_config("mtdnet_viper", [f"data.root={viper_root}", f"train.output_dir={tmp_path}",
                                       "data.height=16", "data.width=8", "train.device=cpu"])
    (tmp_path / "split0").mkdir()
    (tmp_path / "split0" / "train_state.pt").write_bytes(b"")  # split 0 was started
    run_protocol(cfg, splits=[0, 4], resume=True)
    run_protocol(cfg, splits=[0, 4], resume=False)
    assert calls == [(0, True), (4, False), (0, False), (4, False)]
