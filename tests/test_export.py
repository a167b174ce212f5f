"""ONNX export: one export per part (module-scoped, exports take seconds), checked by onnxruntime."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from reidkit.errors import ReidkitError
from reidkit.export import ExportOptionError, ExportParityError, check_onnx_parity, export_onnx
from reidkit.models import build_model
from reidkit.models.io import save_model
from reidkit.models.mtdnet import MTDNet
from reidkit.retrieval.pair_ranking import pair_score_matrix

MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"ONNX export needs {', '.join(MISSING)} (pip install 'reidkit[onnx]')")

PYRAMID_SIZE = (64, 32)
MTD_SIZE = (67, 67)  # the smallest input CaffeNet's trunk takes: 3x3 maps


@pytest.fixture(scope="module")
def pyramid():
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    # Non-trivial BatchNorm statistics, so eval-mode export is told apart from train mode.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def pyramid_onnx(pyramid, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyramid")
    save_model(folder / "pyramid.safetensors", pyramid, {"input_size": list(PYRAMID_SIZE)})
    # From the model file: the input size comes from its metadata.
    report = export_onnx(folder / "pyramid.safetensors", folder / "pyramid.onnx")
    return report


@pytest.fixture(scope="module")
def mtdnet():
    torch.manual_seed(0)
    return MTDNet(trunk="caffenet", input_size=MTD_SIZE).eval()


def run(path, **inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def test_pyramid_features_match_pytorch_for_any_batch(pyramid, pyramid_onnx):
    report = pyramid_onnx
    assert report.part == "features" and report.input_size == PYRAMID_SIZE
    assert report.inputs == ("images",) and report.outputs == ("features",)
    assert report.batch_sizes == (2, 3) and report.max_abs_diff <= 1e-4
    for batch in (1, 5):  # neither was seen at export time
        images = torch.randn(batch, 3, *PYRAMID_SIZE)
        with torch.no_grad():
            expected = pyramid(images).numpy()
        got = run(report.path, images=images)
        assert got.shape == (batch, 6 * 128)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_onnx_metadata_records_the_model(pyramid_onnx):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(pyramid_onnx.path), load_external_data=False)
             .metadata_props}
    assert props["reidkit.part"] == "features"
    assert json.loads(props["reidkit.input_size"]) == list(PYRAMID_SIZE)
    assert json.loads(props["reidkit.model_config"])["backbone"] == "resnet18"


def test_parity_failure_is_loud(pyramid, pyramid_onnx):
    with pytest.raises(ExportParityError, match="differs from PyTorch by up to") as err:
        check_onnx_parity(pyramid_onnx.path, pyramid, input_size=PYRAMID_SIZE, atol=1e-12)
    assert 0 < err.value.max_abs_diff < 1e-3
    other = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3).eval()
    with pytest.raises(ExportParityError) as err:  # a graph that is not this model's
        check_onnx_parity(pyramid_onnx.path, other, input_size=PYRAMID_SIZE)
    assert err.value.max_abs_diff > 1e-2


def test_export_raises_on_parity_failure(pyramid, pyramid_onnx, tmp_path, monkeypatch):
    # The export itself is slow; replace it by copying the already exported graph, which is
    # then checked against a differently initialised model.
    import reidkit.export as export

    class Program:
        model = type("M", (), {"metadata_props": {}})()

        def save(self, path):
            with open(path, "wb") as fh:
                fh.write(pyramid_onnx.path.read_bytes())

    monkeypatch.setattr(export.torch.onnx, "export", lambda *a, **k: Program())
    torch.manual_seed(1)
    other = build_model("pyramid", num_classes=5, backbone="resnet18", num_stripes=3)
    stages = []
    with pytest.raises(ExportParityError, match=r"export to .*bad.onnx \(not written\).*tolerance 0.0001"):
        export_onnx(other, tmp_path / "bad.onnx", input_size=PYRAMID_SIZE, on_stage=stages.append)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary stays
    assert [s.split()[0] for s in stages] == ["exporting", "checking"]
    assert other.training  # the caller's mode is restored
    report = export_onnx(other, tmp_path / "unchecked.onnx", input_size=PYRAMID_SIZE, check=False)
    assert report.max_abs_diff is None and report.batch_sizes == ()


def test_mtdnet_rank_part(mtdnet, tmp_path):
    report = export_onnx(mtdnet, tmp_path / "rank.onnx", part="rank")
    assert report.input_size == MTD_SIZE and report.outputs == ("embedding",)
    images = torch.rand(4, 3, *MTD_SIZE)
    got = run(report.path, images=images)
    with torch.no_grad():
        np.testing.assert_allclose(got, mtdnet(images).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)  # L2-normalised


def test_mtdnet_verify_part_equals_pair_scores(mtdnet, tmp_path):
    report = export_onnx(mtdnet, tmp_path / "verify.onnx", part="verify")
    assert report.inputs == ("images_a", "images_b") and report.outputs == ("same_probability",)
    torch.manual_seed(3)
    a, b = torch.rand(4, 3, *MTD_SIZE), torch.rand(4, 3, *MTD_SIZE)
    got = run(report.path, images_a=a, images_b=b)
    expected = np.diag(pair_score_matrix(mtdnet, a, b, progress=False))  # the 8-pass scores
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    swapped = run(report.path, images_a=b, images_b=a)
    np.testing.assert_allclose(swapped, got, rtol=1e-5, atol=1e-6)  # symmetric, as the 8 passes


def test_wrong_parts_and_sizes_are_refused(pyramid, mtdnet, tmp_path):
    with pytest.raises(ValueError, match="MTDnet models only"):
        export_onnx(pyramid, tmp_path / "x.onnx", part="verify", input_size=PYRAMID_SIZE)
    with pytest.raises(ValueError, match="unknown part 'trunk'"):
        export_onnx(pyramid, tmp_path / "x.onnx", part="trunk", input_size=PYRAMID_SIZE)
    with pytest.raises(ValueError, match="input size is not known"):
        export_onnx(pyramid, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="takes 67x67 images only"):
        export_onnx(mtdnet, tmp_path / "x.onnx", part="rank", input_size=(227, 227))
    with pytest.raises(ValueError, match="end in .onnx"):
        export_onnx(pyramid, tmp_path / "x.pt", input_size=PYRAMID_SIZE)
    rnk = MTDNet(trunk="caffenet", input_size=MTD_SIZE, variant="rnk")
    with pytest.raises(ValueError, match="no verification head; export part 'rank'"):
        export_onnx(rnk, tmp_path / "x.onnx", part="verify")
    for atol in (-1.0, float("nan")):
        with pytest.raises(ReidkitError, match="a number >= 0"):
            export_onnx(pyramid, tmp_path / "x.onnx", input_size=PYRAMID_SIZE, atol=atol)
    assert list(tmp_path.iterdir()) == []


def test_tracker_export_refuses_caffe_input_models(tmp_path):
    from reidkit.export import export_for_tracker

    save_model(tmp_path / "mtd.safetensors", MTDNet(trunk="caffenet", input_size=MTD_SIZE),
               {"input_size": list(MTD_SIZE)})
    with pytest.raises(ExportOptionError, match="Caffe-style input"):
        export_for_tracker(tmp_path / "mtd.safetensors", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
