"""Tests of the backbone registry, the backbones, strict weight loading and the MXNet ResNet-38 converter."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from auxseg.io import DataError
from auxseg.models import backbones as backbones_module
from auxseg.models.backbones import (
    Backbone,
    TinyBackbone,
    count_parameters,
    create_backbone,
    list_backbones,
    register_backbone,
)
from auxseg.models.resnet38 import ResNet38
from auxseg.models.weights import (
    file_sha256,
    load_weights,
    remap_state_dict,
    resnet38_checkpoint_key_map,
    torchvision_imagenet_key_map,
)
from auxseg.tools import convert_resnet38 as converter

ALL_BACKBONES = ["resnet101", "resnet38", "resnet50", "tiny"]
CHANNELS = {"tiny": (64, 256), "resnet50": (256, 2048), "resnet101": (256, 2048), "resnet38": (256, 4096)}
SIZES = [(375, 500), (321, 321)]
BN_TYPES = (nn.BatchNorm2d,)


def _expected_shapes(name: str, height: int, width: int, stride: int) -> dict[str, tuple[int, ...]]:
    low_channels, out_channels = CHANNELS[name]
    return {
        "low": (1, low_channels, math.ceil(height / 4), math.ceil(width / 4)),
        "out": (1, out_channels, math.ceil(height / stride), math.ceil(width / stride)),
    }


@pytest.fixture(scope="module")
def resnet38_model() -> ResNet38:
    torch.manual_seed(0)
    return create_backbone("resnet38")


# --------------------------------------------------------------------------------------------- registry


def test_registry_lists_every_backbone() -> None:
    assert list_backbones() == ALL_BACKBONES


def test_unknown_backbone_error_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="unknown backbone .no_such_net.") as info:
        create_backbone("no_such_net")
    for name in ALL_BACKBONES:
        assert name in str(info.value)


@pytest.mark.parametrize("stride", [4, 32, 0, True])
def test_invalid_output_stride_is_rejected(stride: int) -> None:
    with pytest.raises(ValueError, match="output_stride"):
        create_backbone("tiny", output_stride=stride)


def test_sha256_without_weights_is_rejected() -> None:
    with pytest.raises(ValueError, match="no weights file"):
        create_backbone("tiny", sha256="0" * 64)


def test_register_backbone_adds_factory_and_rejects_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones_module, "_REGISTRY", dict(backbones_module._REGISTRY))

    @register_backbone("tiny_bn_frozen_for_test")
    def factory(*, output_stride: int = 8, freeze_bn: bool | None = None) -> Backbone:
        return TinyBackbone(output_stride=output_stride, freeze_bn=True)

    assert "tiny_bn_frozen_for_test" in list_backbones()
    model = create_backbone("tiny_bn_frozen_for_test", output_stride=16)
    assert isinstance(model, TinyBackbone) and model.output_stride == 16 and model.freeze_bn
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny")(factory)


def test_factory_returning_non_backbone_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones_module, "_REGISTRY", dict(backbones_module._REGISTRY))
    register_backbone("not_a_backbone")(lambda **kwargs: nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="not a Backbone"):
        create_backbone("not_a_backbone")


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ALL_BACKBONES)
@pytest.mark.parametrize("stride", [8, 16])
def test_output_shapes_on_meta_device(name: str, stride: int) -> None:
    """Shape arithmetic for every backbone and stride, without compute (meta tensors)."""
    with torch.device("meta"):
        model = create_backbone(name, output_stride=stride).eval()
    assert (model.low_channels, model.out_channels) == CHANNELS[name]
    assert model.output_stride == stride
    for height, width in SIZES:
        features = model.forward_features(torch.empty(1, 3, height, width, device="meta"))
        shapes = {key: tuple(value.shape) for key, value in features.items()}
        assert shapes == _expected_shapes(name, height, width, stride)
        assert tuple(model(torch.empty(1, 3, height, width, device="meta")).shape) == shapes["out"]


@pytest.mark.parametrize(
    ("name", "height", "width"),
    [("tiny", 375, 500), ("tiny", 321, 321), ("resnet50", 321, 321), ("resnet101", 375, 500)],
)
def test_real_forward_shapes(name: str, height: int, width: int) -> None:
    """Real compute (random weights, eval, no_grad); the meta test above covers every other combination."""
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, height, width))
    assert {k: tuple(v.shape) for k, v in features.items()} == _expected_shapes(name, height, width, 8)
    assert torch.isfinite(features["out"]).all()
    assert tuple(features["out"].shape[2:]) == {(375, 500): (47, 63), (321, 321): (41, 41)}[(height, width)]


def test_resnet38_real_forward_321(resnet38_model: ResNet38) -> None:
    model = resnet38_model.eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 321, 321))
    assert {k: tuple(v.shape) for k, v in features.items()} == _expected_shapes("resnet38", 321, 321, 8)
    assert (features["out"] >= 0).all(), "conv6 is the output of bn7 + ReLU"


@pytest.mark.slow
def test_resnet38_real_forward_375x500(resnet38_model: ResNet38) -> None:
    model = resnet38_model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 375, 500))
    assert tuple(out.shape) == (1, 4096, 47, 63)


# ------------------------------------------------------------------------------------------ parameters


def test_resnet38_parameter_counts_match_the_spec() -> None:
    """Spec: AuxSegNet has 115,382,122 params (115,332,138 trainable); its heads hold 10,311,210."""
    with torch.device("meta"):
        model = create_backbone("resnet38")
    assert count_parameters(model) == 105_070_912
    assert count_parameters(model, trainable_only=True) == 105_021_440
    assert count_parameters(model) + 10_311_210 == 115_382_122


def test_resnet38_state_dict_uses_psa_names() -> None:
    with torch.device("meta"):
        keys = set(create_backbone("resnet38").state_dict())
    expected_sample = {
        "conv1a.weight",
        "b2.bn_branch2a.weight",
        "b2.conv_branch2a.weight",
        "b2.bn_branch2b1.running_var",
        "b2.conv_branch2b1.weight",
        "b2.conv_branch1.weight",
        "b4_5.conv_branch2b1.weight",
        "b5.conv_branch1.weight",
        "b6.bn_branch2b2.running_mean",
        "b6.conv_branch2b2.weight",
        "b7.conv_branch1.weight",
        "bn7.weight",
        "bn7.num_batches_tracked",
    }
    assert expected_sample <= keys
    assert "b2_1.conv_branch1.weight" not in keys  # identity shortcut when the shape is unchanged
    assert not any(key.startswith(("fc", "seg_", "sal_")) for key in keys)


# ----------------------------------------------------------------------------------------- frozen BN


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [module for module in model.modules() if isinstance(module, BN_TYPES)]


def test_resnet38_frozen_batchnorm_conv1a_and_active_dropout(resnet38_model: ResNet38) -> None:
    model = resnet38_model.train()
    assert model.training
    norms = _batch_norms(model)
    assert len(norms) == 37  # 15 basic blocks x 2 + 2 bottlenecks x 3 + bn7
    assert all(not norm.training for norm in norms)
    assert all(not p.requires_grad for norm in norms for p in norm.parameters())
    assert not model.conv1a.weight.requires_grad
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout2d))
    assert model.b2.conv_branch2a.weight.requires_grad
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    out = model(torch.randn(1, 3, 17, 23))
    assert tuple(out.shape) == (1, 4096, 3, 3)
    out.mean().backward()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.conv1a.weight.grad is None and model.bn7.weight.grad is None
    assert model.b7.conv_branch2b2.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_torchvision_resnet_freeze_bn_default_and_override() -> None:
    frozen = create_backbone("resnet50").train()
    assert all(not norm.training and not norm.weight.requires_grad for norm in _batch_norms(frozen))
    before = frozen.bn1.running_mean.clone()
    frozen(torch.randn(2, 3, 40, 40))
    assert torch.equal(frozen.bn1.running_mean, before)

    trainable = create_backbone("resnet50", freeze_bn=False).train()
    assert all(norm.training and norm.weight.requires_grad for norm in _batch_norms(trainable))


def test_tiny_batchnorm_trains_by_default() -> None:
    model = create_backbone("tiny").train()
    norms = _batch_norms(model)
    assert all(norm.training and norm.weight.requires_grad for norm in norms)
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 40, 40))
    assert not torch.equal(norms[0].running_mean, before)


def test_tiny_size_and_determinism() -> None:
    def run(seed: int) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(seed)
        model = create_backbone("tiny").train()
        inputs = torch.randn(2, 3, 64, 72, generator=torch.Generator().manual_seed(123))
        out = model(inputs)
        out.square().mean().backward()
        parameters = list(model.parameters())
        return [p.detach().clone() for p in parameters], out.detach(), [p.grad.clone() for p in parameters]

    params_a, out_a, grads_a = run(7)
    params_b, out_b, grads_b = run(7)
    params_c, _, _ = run(8)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert all(g.abs().sum() > 0 for g in grads_a)
    assert not all(torch.equal(a, c) for a, c in zip(params_a, params_c))
    assert 500_000 <= count_parameters(TinyBackbone()) <= 1_500_000


# -------------------------------------------------------------------------------------- weight loading


def _tiny(seed: int) -> TinyBackbone:
    torch.manual_seed(seed)
    return TinyBackbone()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrapper", ["raw", "state_dict", "model", "module_prefix"])
def test_load_weights_round_trip(tmp_path: Path, wrapper: str) -> None:
    source = _tiny(1)
    state = source.state_dict()
    if wrapper == "state_dict":
        payload: object = {"state_dict": state, "epoch": 3}
    elif wrapper == "model":
        payload = {"model": state}
    elif wrapper == "module_prefix":
        payload = {f"module.{key}": value for key, value in state.items()}
    else:
        payload = state
    path = _save(payload, tmp_path / "tiny.pth")
    target = _tiny(2)
    load_weights(target, path, sha256=file_sha256(path).upper())
    assert all(torch.equal(a, b) for a, b in zip(state.values(), target.state_dict().values()))


def test_create_backbone_loads_local_weights(tmp_path: Path) -> None:
    path = _save(_tiny(3).state_dict(), tmp_path / "tiny.pth")
    loaded = create_backbone("tiny", weights=str(path), sha256=file_sha256(path))
    assert torch.equal(loaded.stem[0].weight, torch.load(path, weights_only=True)["stem.0.weight"])


def test_load_weights_missing_key_names_file_and_key(tmp_path: Path) -> None:
    state = _tiny(1).state_dict()
    del state["context.1.0.weight"]
    path = _save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing key") as info:
        load_weights(_tiny(2), path)
    assert str(path) in str(info.value) and "context.1.0.weight" in str(info.value)


def test_load_weights_unexpected_key_names_file_and_key(tmp_path: Path) -> None:
    state = _tiny(1).state_dict()
    state["head.weight"] = torch.zeros(3)
    path = _save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected key") as info:
        load_weights(_tiny(2), path)
    assert str(path) in str(info.value) and "head.weight" in str(info.value)


def test_load_weights_shape_mismatch_names_shapes(tmp_path: Path) -> None:
    state = _tiny(1).state_dict()
    state["stem.0.weight"] = torch.zeros(32, 3, 5, 5)
    path = _save(state, tmp_path / "shape.pth")
    target = _tiny(2)
    before = target.stem[0].weight.clone()
    expected = r"shape mismatch.*stem\.0\.weight: file \(32, 3, 5, 5\) vs model \(32, 3, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        load_weights(target, path)
    assert torch.equal(target.stem[0].weight, before), "a failed load must not change the module"


def test_load_weights_wrong_sha256(tmp_path: Path) -> None:
    path = _save(_tiny(1).state_dict(), tmp_path / "tiny.pth")
    wrong = "ab" * 32
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        load_weights(_tiny(2), path, sha256=wrong)
    assert str(path) in str(info.value) and wrong in str(info.value) and file_sha256(path) in str(info.value)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        load_weights(_tiny(2), path, sha256="abc")


def test_missing_weights_file_names_file_and_how_to_get_it(tmp_path: Path) -> None:
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_weights(_tiny(1), path)
    assert str(path) in str(info.value) and "never downloaded" in str(info.value)
    with torch.device("meta"):
        with pytest.raises(FileNotFoundError, match="convert_resnet38") as info:
            create_backbone("resnet38", weights=str(path))
    assert str(path) in str(info.value)


def test_unreadable_and_mxnet_files_are_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read as a torch checkpoint") as info:
        load_weights(_tiny(1), garbage)
    assert str(garbage) in str(info.value)
    params = tmp_path / "weights.params"
    params.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="convert_resnet38"):
        load_weights(_tiny(1), params)
    not_tensors = _save({"stem.0.weight": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not tensors"):
        load_weights(_tiny(1), not_tensors)


def test_key_map_dict_and_function_are_applied(tmp_path: Path) -> None:
    state = {f"old.{key}": value for key, value in _tiny(1).state_dict().items()}
    state["old.fc.weight"] = torch.zeros(10, 256)
    path = _save(state, tmp_path / "renamed.pth")

    def rename(key: str) -> str | None:
        return None if key == "old.fc.weight" else key.removeprefix("old.")

    target = _tiny(2)
    load_weights(target, path, key_map=rename)
    assert torch.equal(target.stem[0].weight, state["old.stem.0.weight"])

    as_dict = {key: rename(key) for key in state}
    load_weights(_tiny(3), path, key_map=as_dict)
    with pytest.raises(ValueError, match="unexpected key.*old\\.fc\\.weight"):
        load_weights(_tiny(3), path, key_map={key: rename(key) for key in state if key != "old.fc.weight"})


def test_remap_rejects_collisions_and_strips_repeated_prefixes() -> None:
    tensor = torch.zeros(1)
    assert remap_state_dict({"module.module.a": tensor}) == {"a": tensor}
    with pytest.raises(ValueError, match="both map to 'a'"):
        remap_state_dict({"module.a": tensor, "a": tensor}, source="ckpt.pth")


def test_missing_batchnorm_counters_are_tolerated(tmp_path: Path) -> None:
    state = {k: v for k, v in _tiny(1).state_dict().items() if not k.endswith("num_batches_tracked")}
    target = _tiny(2)
    load_weights(target, _save(state, tmp_path / "old.pth"))
    assert torch.equal(target.stem[0].weight, state["stem.0.weight"])


def test_default_key_maps() -> None:
    assert torchvision_imagenet_key_map("fc.weight") is None
    assert torchvision_imagenet_key_map("layer1.0.conv1.weight") == "layer1.0.conv1.weight"
    for head in ["fc8.weight", "seg_conv1.bias", "sal_conv4.weight", "seg_att.W_z.1.running_mean",
                 "sal_g.weight", "seg_W.bias", "cross_att.0.weight"]:
        assert resnet38_checkpoint_key_map(head) is None, head
    for key in ["conv1a.weight", "b2.bn_branch2a.weight", "bn7.running_var"]:
        assert resnet38_checkpoint_key_map(key) == key
    auxsegnet_like = {"module.b2.conv_branch1.weight": torch.zeros(1), "module.fc8.weight": torch.zeros(1),
                      "module.seg_conv4.weight": torch.zeros(1)}
    assert list(remap_state_dict(auxsegnet_like, key_map=resnet38_checkpoint_key_map)) == ["b2.conv_branch1.weight"]


def test_resnet50_loads_torchvision_imagenet_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(5)
    classifier = torchvision.models.resnet50(weights=None)
    state = {k: v for k, v in classifier.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = _save(state, tmp_path / "resnet50-imagenet.pth")
    model = create_backbone("resnet50", weights=str(path))
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(model.bn1.running_var, state["bn1.running_var"])
    assert not model.bn1.weight.requires_grad


# --------------------------------------------------------------------------------- MXNet conversion

_FLAG_OF_DTYPE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2, np.dtype(np.int32): 4}


def _write_mxnet_params(path: Path, arrays: dict[str, np.ndarray], layout: str) -> None:
    """Independent writer of the MXNet NDArray-list format ('legacy', 'v1' or 'v2' array records)."""
    chunks = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for array in arrays.values():
        if layout == "v2":
            chunks.append(struct.pack("<Ii", 0xF993FAC9, 0))
            chunks.append(struct.pack(f"<i{array.ndim}q", array.ndim, *array.shape))
        elif layout == "v1":
            chunks.append(struct.pack(f"<Ii{array.ndim}q", 0xF993FAC8, array.ndim, *array.shape))
        else:
            chunks.append(struct.pack(f"<I{array.ndim}I", array.ndim, *array.shape))
        chunks.append(struct.pack("<iii", 1, 0, _FLAG_OF_DTYPE[array.dtype]))
        chunks.append(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        encoded = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(encoded)) + encoded)
    path.write_bytes(b"".join(chunks))


def _a1_mxnet_names() -> list[str]:
    """Every parameter name of the MXNet A1 model, built from its naming scheme (not from our key map)."""
    names = ["arg:conv1a_weight", "arg:linear1000_weight", "arg:linear1000_bias"]
    bn_fields = ["arg:{}_gamma", "arg:{}_beta", "aux:{}_moving_mean", "aux:{}_moving_var"]
    blocks = {2: ["a", "b1", "b2"], 3: ["a", "b1", "b2"], 4: ["a"] + [f"b{i}" for i in range(1, 6)],
              5: ["a", "b1", "b2"], 6: ["a"], 7: ["a"]}
    for stage, positions in blocks.items():
        for position in positions:
            bottleneck = stage >= 6
            convs = ["branch2a", "branch2b1"] + (["branch2b2"] if bottleneck else [])
            if position == "a":
                convs.append("branch1")
            norms = ["branch2a", "branch2b1"] + (["branch2b2"] if bottleneck else [])
            names += [f"arg:res{stage}{position}_{conv}_weight" for conv in convs]
            names += [field.format(f"bn{stage}{position}_{norm}") for norm in norms for field in bn_fields]
    names += [field.format("bn7") for field in bn_fields]
    return names


def test_mxnet_names_cover_resnet38_exactly() -> None:
    mapped = [converter.mxnet_name_to_torch(name) for name in _a1_mxnet_names()]
    kept = [key for key in mapped if key is not None]
    assert len(kept) == len(set(kept))
    with torch.device("meta"):
        expected = {k for k in ResNet38().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(kept) == expected
    assert mapped.count(None) == 2  # the ImageNet classifier linear1000


@pytest.mark.parametrize(
    ("mxnet_name", "torch_name"),
    [
        ("arg:conv1a_weight", "conv1a.weight"),
        ("arg:res2a_branch1_weight", "b2.conv_branch1.weight"),
        ("arg:bn3b2_branch2b1_beta", "b3_2.bn_branch2b1.bias"),
        ("aux:bn4b5_branch2a_moving_var", "b4_5.bn_branch2a.running_var"),
        ("arg:res6a_branch2b2_weight", "b6.conv_branch2b2.weight"),
        ("aux:bn7_moving_mean", "bn7.running_mean"),
        ("bn7_gamma", "bn7.weight"),
        ("arg:linear1000_weight", None),
    ],
)
def test_mxnet_name_mapping(mxnet_name: str, torch_name: str | None) -> None:
    assert converter.mxnet_name_to_torch(mxnet_name) == torch_name


@pytest.mark.parametrize("name", ["arg:fc8_weight", "arg:res2a_branch2a_gamma", "arg:bn2a_branch2a_weight"])
def test_mxnet_unknown_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unrecognised"):
        converter.mxnet_name_to_torch(name)


@pytest.mark.parametrize("layout", ["legacy", "v1", "v2"])
def test_mxnet_reader_round_trip(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "arg:conv1a_weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "aux:bn7_moving_var": rng.random(5).astype(np.float64),
        "arg:half": rng.standard_normal((2, 3)).astype(np.float16),
        "arg:ints": np.arange(6, dtype=np.int32).reshape(3, 2),
    }
    path = tmp_path / f"{layout}.params"
    _write_mxnet_params(path, arrays, layout)
    loaded = converter.read_mxnet_params(path)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name


def test_mxnet_reader_rejects_bad_files(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad.params"
    bad_magic.write_bytes(struct.pack("<QQQ", 0x113, 0, 0))
    with pytest.raises(DataError, match="not an MXNet NDArray list") as info:
        converter.read_mxnet_params(bad_magic)
    assert str(info.value).startswith(str(bad_magic))
    good = tmp_path / "good.params"
    _write_mxnet_params(good, {"arg:conv1a_weight": np.zeros((4, 3, 3, 3), np.float32)}, "v2")
    truncated = tmp_path / "truncated.params"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated"):
        converter.read_mxnet_params(truncated)
    with pytest.raises(FileNotFoundError):
        converter.read_mxnet_params(tmp_path / "absent.params")


def _small_reference() -> dict[str, torch.Tensor]:
    """A stand-in for the 105 M-parameter ResNet38 reference: four of its keys, with small shapes."""
    return {
        "conv1a.weight": torch.empty(4, 3, 3, 3),
        "b2.bn_branch2a.weight": torch.empty(4),
        "b2.bn_branch2a.running_mean": torch.empty(4),
        "b2.bn_branch2a.num_batches_tracked": torch.zeros((), dtype=torch.long),
        "bn7.bias": torch.empty(6),
    }


def test_convert_command_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(converter, "_resnet38_reference", _small_reference)
    rng = np.random.default_rng(1)
    arrays = {
        "arg:conv1a_weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "arg:bn2a_branch2a_gamma": rng.standard_normal(4).astype(np.float64),
        "aux:bn2a_branch2a_moving_mean": rng.standard_normal(4).astype(np.float32),
        "arg:bn7_beta": rng.standard_normal(6).astype(np.float16),
        "arg:linear1000_bias": rng.standard_normal(10).astype(np.float32),
    }
    source = tmp_path / "a1.params"
    _write_mxnet_params(source, arrays, "v2")
    output = tmp_path / "out" / "resnet38_a1.pth"
    assert converter.main([str(source), str(output)]) == 0
    assert file_sha256(output) in capsys.readouterr().out
    state = torch.load(output, weights_only=True)
    assert list(state) == list(_small_reference())
    assert torch.equal(state["conv1a.weight"], torch.from_numpy(arrays["arg:conv1a_weight"]))
    assert state["b2.bn_branch2a.weight"].dtype == torch.float32
    assert torch.allclose(state["b2.bn_branch2a.weight"], torch.from_numpy(arrays["arg:bn2a_branch2a_gamma"]).float())
    assert torch.equal(state["b2.bn_branch2a.running_mean"], torch.from_numpy(arrays["aux:bn2a_branch2a_moving_mean"]))
    assert int(state["b2.bn_branch2a.num_batches_tracked"]) == 0
    first_hash = file_sha256(output)
    assert converter.main([str(source), str(output)]) == 0
    assert file_sha256(output) == first_hash, "conversion must be byte-deterministic"


def test_convert_fails_loudly_on_incomplete_or_wrong_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "partial.params"
    _write_mxnet_params(source, {"arg:conv1a_weight": np.zeros((64, 3, 3, 3), np.float32),
                                 "arg:res2a_branch1_weight": np.zeros((128, 64, 3, 3), np.float32)}, "legacy")
    output = tmp_path / "never.pth"
    assert converter.main([str(source), str(output)]) == 1
    message = capsys.readouterr().err
    assert str(source) in message
    assert "b2.conv_branch1.weight" in message and "(128, 64, 1, 1)" in message
    assert "not in the file" in message and not output.exists()
