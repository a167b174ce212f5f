"""reidkit.search: a gallery in memory or a feature file, the file's faiss index when it has one."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import reidkit
from reidkit.retrieval.features import FeatureSet, save_features
from reidkit.retrieval.search import build_index_file


def gallery(n: int = 50, dim: int = 8) -> FeatureSet:
    features = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return FeatureSet(features, [f"g{i}.jpg" for i in range(n)], np.arange(n) % 7, np.arange(n) % 3,
                      {"metric": "euclidean"})


def test_search_finds_each_image_first_with_its_labels():
    fs = gallery()
    hits = reidkit.search(fs, fs.features[[4, 9]], k=3)
    assert [[h.index for h in q][0] for q in hits] == [4, 9]
    first = hits[1][0]
    assert (first.rank, first.distance, first.path, first.pid, first.camid) == (
        1, pytest.approx(0.0, abs=1e-5), "g9.jpg", 9 % 7, 9 % 3)
    brute = np.linalg.norm(fs.features - fs.features[4], axis=1)
    assert [h.index for h in hits[0]] == list(np.argsort(brute)[:3])
    assert [h.distance for h in hits[0]] == pytest.approx(np.sort(brute)[:3], abs=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss")
@pytest.mark.filterwarnings("ignore::reidkit.retrieval.features.MissingImagesWarning")  # no images
def test_a_feature_file_is_searched_with_its_index(tmp_path):
    fs = gallery()
    path = tmp_path / "g.npz"
    save_features(path, fs)
    assert reidkit.search(path, fs.features[:1], k=1)[0][0].index == 0
    # an index beside the file is read: one built from another gallery is refused
    build_index_file(path, gallery(n=60).features, spec="IVF{nlist},Flat")
    with pytest.raises(ValueError, match="rebuild it"):
        reidkit.search(path, fs.features[:1], k=1)
