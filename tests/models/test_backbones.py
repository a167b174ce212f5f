import copy
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from reidkit.models import ResNetBackbone, build_model
from reidkit.models.weights import load_weights, read_state_dict


@pytest.fixture(scope="module")
def tv18() -> torchvision.models.ResNet:
    """A torchvision ResNet-18 with random weights and non-trivial BN statistics (read-only)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def tv18_file(tv18, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv18.state_dict(), path)
    return path


def test_reproduces_torchvision_layer4_output(tv18, tv18_file):
    ours = ResNetBackbone("resnet18", pretrained=tv18_file).eval()
    reference = copy.deepcopy(tv18)
    reference.avgpool, reference.fc = nn.Identity(), nn.Identity()  # torchvision's own forward
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = ours(x)
        expected = reference(x)
    assert fmap.shape == (2, 512, 2, 1)
    assert ours.out_channels == 512
    torch.testing.assert_close(fmap.flatten(1), expected, atol=1e-5, rtol=1e-5)


def test_last_stride_one_doubles_the_map(tv18_file):
    x = torch.randn(1, 3, 64, 32)
    strided = ResNetBackbone("resnet18", pretrained=tv18_file).eval()
    unstrided = ResNetBackbone("resnet18", last_stride=1, pretrained=tv18_file).eval()
    with torch.no_grad():
        assert strided(x).shape == (1, 512, 2, 1)
        assert unstrided(x).shape == (1, 512, 4, 2)


def test_resnet50_last_stride_and_parameter_names():
    # Shapes only: the meta device skips the weights' initialisation and the arithmetic.
    with torch.device("meta"):
        strided = ResNetBackbone("resnet50")
        unstrided = ResNetBackbone("resnet50", last_stride=1)
        theirs = set(torchvision.models.resnet50(weights=None).state_dict())
        x = torch.empty(1, 3, 64, 32)
        assert strided(x).shape == (1, 2048, 2, 1)
        assert unstrided(x).shape == (1, 2048, 4, 2)
    assert strided.out_channels == 2048
    assert set(unstrided.state_dict()) == theirs - {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("fmt", ["safetensors", "wrapped", "old"])
def test_pretrained_from_local_file(tv18, tmp_path, fmt):
    state = tv18.state_dict()
    path = tmp_path / f"weights.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "wrapped":  # a DataParallel training checkpoint
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:  # torchvision's older files have no num_batches_tracked
        torch.save({k: v for k, v in state.items() if "num_batches" not in k}, path)
    ours = ResNetBackbone("resnet18", pretrained=str(path))
    torch.testing.assert_close(ours.layer3[1].conv2.weight, tv18.layer3[1].conv2.weight)
    torch.testing.assert_close(ours.bn1.running_var, tv18.bn1.running_var)
    tensors = list(ours.parameters()) + list(ours.buffers())
    assert all(t.device.type == "cpu" for t in tensors)
    assert all(p.requires_grad for p in ours.parameters())


def test_load_weights_copies(tv18):
    ours = ResNetBackbone("resnet18")
    state = tv18.state_dict()
    load_weights(ours, state, source="memory")
    torch.testing.assert_close(ours.conv1.weight, tv18.conv1.weight)
    assert ours.conv1.weight.data_ptr() != state["conv1.weight"].data_ptr()


def test_pretrained_through_build_model(tv18, tv18_file):
    model = build_model("pyramid", 5, backbone="resnet18", pretrained=tv18_file)
    torch.testing.assert_close(model.backbone.layer4[0].conv1.weight, tv18.layer4[0].conv1.weight)
    assert model.config["pretrained"] is None  # a rebuilt model takes its weights from a checkpoint


def test_pretrained_true_downloads_torchvision_weights(tv18, monkeypatch):
    urls = []

    def fake_download(url, **kwargs):
        urls.append(url)
        return {k: v.clone() for k, v in tv18.state_dict().items()}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    ours = ResNetBackbone("resnet18", pretrained=True)
    assert urls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    torch.testing.assert_close(ours.layer1[0].conv1.weight, tv18.layer1[0].conv1.weight)


def test_pretrained_true_offline_explains_local_file(monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"model\.pretrained=/path/resnet50-0676ba61\.pth"):
        ResNetBackbone("resnet50", pretrained=True)


def test_mismatched_weights_name_the_keys(tv18):
    with torch.device("meta"):  # the checks run before any copying
        resnet34 = torchvision.models.resnet34(weights=None).state_dict()
        target = ResNetBackbone("resnet18")
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.2\.") as info:
        load_weights(target, resnet34, source="r34.pth")
    assert "r34.pth" in str(info.value)
    resnet18 = dict(tv18.state_dict())
    resnet18["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    del resnet18["layer4.1.bn2.weight"]
    with pytest.raises(ValueError, match=r"missing keys: layer4\.1\.bn2\.weight.*shape mismatches: "
                                         r"conv1\.weight \(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)"):
        load_weights(target, resnet18, source="broken.pth")


def test_bad_files_and_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        read_state_dict(corrupt)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        ResNetBackbone("resnet9")
    with pytest.raises(ValueError, match="last_stride"):
        ResNetBackbone("resnet18", last_stride=3)
    with pytest.raises(TypeError, match="pretrained"):
        ResNetBackbone("resnet18", pretrained=1.5)
