import importlib.util
import sys

import numpy as np
import pytest
import torch

from reidkit.retrieval.features import FeatureSet
from reidkit.retrieval.search import (
    ApproximateIndex,
    GalleryIndex,
    build_index_file,
    index_path_for,
    load_index_for,
)

HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install faiss-cpu)")


def brute_force(queries, gallery, metric):
    """Reference: every distance in float64 with numpy, ranked by a stable argsort."""
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    if metric == "euclidean":
        dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2))
    else:
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - qn @ gn.T
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, axis=1), order


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((9, 24)).astype(np.float32),
            rng.standard_normal((503, 24)).astype(np.float32))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 1, 50, 502, 503, 504])
def test_search_equals_brute_force(data, metric, chunk_size):
    queries, gallery = data
    dist, idx = GalleryIndex(gallery, metric, chunk_size=chunk_size).search(queries, 20)
    ref_dist, ref_idx = brute_force(queries, gallery, metric)
    assert dist.shape == idx.shape == (9, 20)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx[:, :20])
    np.testing.assert_allclose(dist, ref_dist[:, :20], rtol=1e-5, atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_hand_computed_distances():
    gallery = np.array([[0, 0], [3, 4], [1, 0], [0, -2]], dtype=np.float32)
    dist, idx = GalleryIndex(gallery).search(np.array([[0, 0]], dtype=np.float32), 3)
    assert idx.tolist() == [[0, 2, 3]] and dist.tolist() == [[0.0, 1.0, 2.0]]  # true, not squared
    dist, idx = GalleryIndex(gallery, "cosine").search(np.array([1.0, 0.0], np.float32), 4)
    # cos to (1, 0): 1 for [1, 0]; 0.6 for [3, 4]; 0 for [0, -2] and for the zero vector.
    assert idx.tolist() == [[2, 1, 0, 3]]
    np.testing.assert_allclose(dist, [[0.0, 0.4, 1.0, 1.0]], atol=1e-7)


def test_a_query_in_the_gallery_is_at_distance_zero(data):
    _, gallery = data
    big = gallery * 1000  # large norms: |q|^2 + |g|^2 - 2 q.g alone would not give 0
    dist, idx = GalleryIndex(big).search(big[[7, 300]], 1)
    assert idx.ravel().tolist() == [7, 300] and dist.ravel().tolist() == [0.0, 0.0]


def test_ties_are_ordered_by_gallery_index():
    gallery = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [2, 0]], dtype=np.float32)
    dist, idx = GalleryIndex(gallery, chunk_size=2).search(np.zeros((1, 2), np.float32), 5)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] and dist.tolist() == [[1, 1, 1, 1, 2]]


def test_k_larger_than_the_gallery_returns_all_of_it(data):
    queries, gallery = data
    dist, idx = GalleryIndex(gallery[:10], chunk_size=3).search(queries, 50)
    assert idx.shape == (9, 10)
    np.testing.assert_array_equal(idx, brute_force(queries, gallery[:10], "euclidean")[1])


def test_float16_and_tensor_galleries(data):
    queries, gallery = data
    half = gallery.astype(np.float16)
    _, idx = GalleryIndex(half, chunk_size=64).search(queries, 10)
    np.testing.assert_array_equal(idx, brute_force(queries, half, "euclidean")[1][:, :10])
    _, idx_t = GalleryIndex(torch.from_numpy(gallery)).search(torch.from_numpy(queries), 10)
    np.testing.assert_array_equal(idx_t, brute_force(queries, gallery, "euclidean")[1][:, :10])


def test_read_only_memory_mapped_gallery(tmp_path, data):
    queries, gallery = data
    np.save(tmp_path / "g.npy", gallery)
    mapped = np.load(tmp_path / "g.npy", mmap_mode="r")
    _, idx = GalleryIndex(mapped, "cosine", chunk_size=100).search(queries, 5)
    np.testing.assert_array_equal(idx, brute_force(queries, gallery, "cosine")[1][:, :5])


def test_from_feature_set_uses_the_recorded_metric(data):
    queries, gallery = data
    n = len(gallery)
    fs = FeatureSet(gallery, [str(i) for i in range(n)], np.zeros(n), np.zeros(n), {"metric": "cosine"})
    index = GalleryIndex.from_feature_set(fs)
    assert index.metric == "cosine" and len(index) == n and index.dim == 24
    assert GalleryIndex.from_feature_set(fs, metric="euclidean").metric == "euclidean"


def test_bad_arguments_are_refused(data):
    queries, gallery = data
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        GalleryIndex(gallery, "l1")
    with pytest.raises(ValueError, match="unknown backend 'annoy'"):
        GalleryIndex(gallery, backend="annoy")
    with pytest.raises(ValueError, match="empty"):
        GalleryIndex(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        GalleryIndex(np.zeros(4, np.float32))
    index = GalleryIndex(gallery)
    with pytest.raises(ValueError, match="k must be a positive int"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match=r"queries must be \(num_queries, 24\).*got shape \(9, 12\)"):
        index.search(queries[:, :12], 3)


def test_searching_leaves_the_queries_alone(data):
    queries, gallery = data
    before = queries.copy()
    for backend in ("torch", "faiss") if HAS_FAISS else ("torch",):
        GalleryIndex(gallery, "cosine", backend).search(queries, 3)
    np.testing.assert_array_equal(queries, before)


@needs_faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_agrees_with_torch(data, metric):
    queries, gallery = data
    torch_dist, torch_idx = GalleryIndex(gallery, metric, "torch", chunk_size=77).search(queries, 15)
    faiss_dist, faiss_idx = GalleryIndex(gallery, metric, "faiss", chunk_size=77).search(queries, 15)
    np.testing.assert_array_equal(faiss_idx, torch_idx)
    np.testing.assert_allclose(faiss_dist, torch_dist, rtol=1e-6, atol=1e-7)  # both recomputed


def test_missing_faiss_is_named(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        GalleryIndex(data[1], backend="faiss")
    assert GalleryIndex(data[1]).backend == "torch"  # the default never needs faiss


@pytest.fixture(scope="module")
def clustered():
    """Identities with several views: 60 centres, 40 images each, and queries near 7 centres."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((60, 32)).astype(np.float32)
    gallery = (centres.repeat(40, axis=0) + 0.3 * rng.standard_normal((2400, 32))).astype(np.float32)
    queries = (centres[:7] + 0.3 * rng.standard_normal((7, 32))).astype(np.float32)
    return queries, gallery


@needs_faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_search_probing_every_list_is_exact(clustered, metric):
    queries, gallery = clustered
    ann = ApproximateIndex.build(gallery, metric, spec="IVF{nlist},Flat", nprobe=64)
    assert ann.spec == "IVF64,Flat" and ann.num_items == 2400  # 64 lists: about sqrt(2,400)
    index = GalleryIndex(gallery, metric, approximate=ann, threshold=1000)
    assert index.mode == "approximate"
    dist, idx = index.search(queries, 10)
    exact_dist, exact_idx = GalleryIndex(gallery, metric).search(queries, 10)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_array_equal(dist, exact_dist)  # re-scored from the vectors, like exact


@needs_faiss
def test_approximate_index_recall_round_trip_and_threshold(tmp_path, clustered):
    queries, gallery = clustered
    feature_file = tmp_path / "g.npz"
    feature_file.write_bytes(b"features")  # only its path and age matter here
    path = build_index_file(feature_file, gallery, spec="PCA16,IVF{nlist},PQ4x4", nprobe=8,
                            refine=20)
    assert path == index_path_for(feature_file) == tmp_path / "g.npz.faiss"
    ann = load_index_for(feature_file, 2400, 32, "euclidean")
    assert (ann.spec, ann.nprobe, ann.refine) == ("PCA16,IVF64,PQ4x4", 8, 20)
    approx = GalleryIndex(gallery, approximate=ann, threshold=2400).search(queries, 10)[1]
    exact = GalleryIndex(gallery).search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9  # a 2-byte code per vector, re-scored exactly
    assert GalleryIndex(gallery, approximate=ann, threshold=2401).mode == "exact"
    assert load_index_for(tmp_path / "other.npz", 2400, 32, "euclidean") is None
    with pytest.raises(ValueError, match="rebuild it"):
        load_index_for(feature_file, 2399, 32, "euclidean")
    with pytest.raises(ValueError, match="rebuild it"):
        GalleryIndex(gallery[:100], approximate=ann)
    assert ApproximateIndex.load(path).nbytes == ann.nbytes > 0


@needs_faiss
def test_short_candidate_lists_never_return_padding(clustered):
    queries, gallery = clustered
    # One probed list of ~40 items cannot fill 10 x 50 candidates: faiss pads with -1.
    ann = ApproximateIndex.build(gallery, spec="IVF{nlist},Flat", nprobe=1, refine=50)
    dist, idx = GalleryIndex(gallery, approximate=ann, threshold=0).search(queries, 10)
    assert np.isfinite(dist).all() and (idx >= 0).all()
    assert all(len(set(row)) == 10 for row in idx)


@needs_faiss
def test_approximate_index_bad_spec_is_named(clustered):
    with pytest.raises(ValueError, match="faiss cannot build"):
        ApproximateIndex.build(clustered[1], spec="NoSuchIndex")
