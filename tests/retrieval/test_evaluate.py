"""evaluate_model: one path from a model to its ranking result, for embeddings and pair scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.data import load_dataset
from reidkit.evaluation import evaluate_rank
from reidkit.models import build_model
from reidkit.models.mtdnet import MTDNet
from reidkit.retrieval.evaluate import evaluate_model, mirror_distances, model_distances


@pytest.fixture(scope="module")
def market(synth_root):
    return load_dataset("market1501", synth_root)


def labels(dataset):
    return [np.array([getattr(r, k) for r in records]) for k, records in
            (("pid", dataset.query), ("pid", dataset.gallery), ("camid", dataset.query),
             ("camid", dataset.gallery))]


def test_streamed_embeddings_give_the_full_matrix_numbers(market):
    torch.manual_seed(0)
    model = build_model("baseline", num_classes=3, backbone="resnet18").eval()
    model.spec = model.spec.trained_at((64, 32))
    streamed = evaluate_model(model, market)
    full = evaluate_rank(model_distances(model, market.query, market.gallery), *labels(market),
                         max_rank=min(50, len(market.gallery)))
    assert streamed.mAP == pytest.approx(full.mAP, abs=1e-6)
    np.testing.assert_allclose(streamed.cmc, full.cmc, atol=1e-6)
    assert streamed.num_valid_queries == full.num_valid_queries > 0
    # records instead of the data set, and the size given instead of the model's own
    by_records = evaluate_model(model, market.query, market.gallery, size=(64, 32))
    assert by_records.mAP == pytest.approx(streamed.mAP, abs=1e-6)


def test_a_pair_model_ranks_by_pair_scores_unless_told_otherwise(market):
    torch.manual_seed(0)
    model = MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=32, rank_dim=8).eval()
    pairs = model_distances(model, market.query[:3], market.gallery[:5])
    embedding = model_distances(model, market.query[:3], market.gallery[:5], ranks_by="embedding")
    assert pairs.shape == embedding.shape == (3, 5)
    assert ((pairs >= 0) & (pairs <= 1)).all()  # 1 - a probability
    assert not np.allclose(pairs, embedding)
    with pytest.raises(ValueError, match="takes 67x67 images only"):
        evaluate_model(model, market, size=(64, 32))


def test_unknown_options_and_missing_gallery_are_refused(market):
    model = build_model("baseline", num_classes=3, backbone="resnet18")
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        evaluate_model(model, market, batchsize=8)
    with pytest.raises(TypeError, match="needs gallery records"):
        evaluate_model(model, market.query)
    with pytest.raises(ValueError, match="input size is not known"):
        evaluate_model(model, market)


def test_mirror_distances_are_the_mean_of_the_four_squared_distances() -> None:
    rng = np.random.default_rng(0)
    q, qm, g, gm = (rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 3, 4, 4))
    brute = np.array([[np.mean([np.sum((a - b) ** 2) for a in (q[i], qm[i]) for b in (g[j], gm[j])])
                       for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(mirror_distances(q, qm, g, gm), brute, rtol=1e-5)


def test_a_cross_domain_wrapper_is_evaluated_as_its_target(market):
    from reidkit.models.mtdnet import CrossDomainMTDNet

    torch.manual_seed(0)
    target = MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=32, rank_dim=8).eval()
    wrapped = CrossDomainMTDNet(target, target)
    query, gallery = market.query[:3], market.gallery[:6]
    np.testing.assert_array_equal(model_distances(wrapped, query, gallery),
                                  model_distances(target, query, gallery))


def test_a_model_without_embedding_is_refused_before_any_image_is_read(market, tmp_path):
    from reidkit.models.io import save_model
    from reidkit.models.spec import NoEmbeddingError
    from reidkit.retrieval.features import FeatureError, extract_feature_set

    cls = MTDNet(trunk="caffenet", input_size=(67, 67), fc_width=32, variant="cls").eval()
    with pytest.raises(NoEmbeddingError, match="no embedding"):
        evaluate_model(cls, market, ranks_by="embedding")
    assert evaluate_model(cls, market.query[:2], market.gallery[:4]).num_queries == 2  # pairs
    save_model(tmp_path / "cls.safetensors", cls)
    with pytest.raises(FeatureError, match="cls.safetensors: this model has no embedding"):
        extract_feature_set(tmp_path / "cls.safetensors", market.gallery, progress=False)
