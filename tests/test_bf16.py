"""bf16 autocast on the CPU: the runtime settings, their resolution, fp32-kept numerics and agreement with fp32."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from auxseg import runtime as precision
from auxseg.config import RuntimeParams, RuntimeSection
from auxseg.params import ParamError, parse_section, validate_params_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def native(monkeypatch):
    """Set what the CPU detection answers: ``native(False)`` simulates a CPU without native bf16."""

    def set_answer(answer: bool) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda: answer)

    return set_answer


# ------------------------------------------------------------------------------------------------ the setting
@pytest.mark.parametrize("key", ["cpu_bf16", "cpu_bf16_train"])
@pytest.mark.parametrize("value", ["fast", "ON", 1, None, 0.5])
def test_a_bad_value_is_an_error_naming_the_key(key, value):
    with pytest.raises(ParamError, match=rf"^runtime\.{key}: "):
        parse_section(RuntimeSection, {key: value}, "runtime")


@pytest.mark.parametrize("key", ["cpu_bf16", "cpu_bf16_train"])
def test_the_settings_take_auto_on_off_and_yaml_booleans(key):
    for value in ("auto", "on", "off"):
        assert getattr(parse_section(RuntimeSection, {key: value}, "runtime"), key) == value
    # YAML 1.1 (PyYAML) reads unquoted on / off as booleans; they mean the same.
    for text, expected in (("on", "on"), ("off", "off"), ("true", "on"), ("false", "off")):
        data = yaml.safe_load(f"{key}: {text}")
        assert getattr(parse_section(RuntimeSection, data, "runtime"), key) == expected


def test_the_committed_default_keeps_the_cpu_at_fp32():
    parsed = validate_params_file(REPO / "params.yaml")["runtime"]
    assert parsed.cpu_bf16 == "off" and parsed.cpu_bf16_train == "off"
    assert RuntimeParams().cpu_bf16 == "off" and RuntimeParams().cpu_bf16_train == "off"
    assert not precision.use_bf16(parsed, "cpu") and not precision.use_bf16(parsed, "cpu", training=True)


# ------------------------------------------------------------------------------------------------ resolution
def test_auto_is_off_on_a_cpu_without_bf16_and_on_with_it(native):
    runtime = RuntimeParams(cpu_bf16="auto", cpu_bf16_train="auto")
    native(False)
    assert precision.resolve_cpu_bf16("auto") is False
    assert not precision.use_bf16(runtime, "cpu") and not precision.use_bf16(runtime, "cpu", training=True)
    native(True)
    assert precision.resolve_cpu_bf16("auto") is True
    assert precision.use_bf16(runtime, "cpu") and precision.use_bf16(runtime, "cpu", training=True)


def test_on_and_off_do_not_depend_on_the_cpu(native):
    for answer in (False, True):
        native(answer)
        assert precision.resolve_cpu_bf16("on") is True and precision.resolve_cpu_bf16("off") is False
    with pytest.raises(ValueError, match="cpu_bf16"):
        precision.resolve_cpu_bf16("sometimes")


def test_the_detection_needs_native_bf16_on_x86(monkeypatch):
    """Plain AVX-512 (oneDNN emulates bf16 there) is not native: x86 needs AVX512-BF16 or AMX as PyTorch reports."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    precision.cpu_bf16_native.cache_clear()
    try:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # only decidable where oneDNN supports bf16 at all
            assert precision.cpu_bf16_native() is False
            precision.cpu_bf16_native.cache_clear()
            monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
            assert precision.cpu_bf16_native() is True
        precision.cpu_bf16_native.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert precision.cpu_bf16_native() is False
    finally:
        precision.cpu_bf16_native.cache_clear()


def test_the_device_table(native):
    native(True)
    runtime = RuntimeParams(amp_bf16=False, cpu_bf16="on", cpu_bf16_train="off")
    assert precision.use_bf16(runtime, "cpu") and not precision.use_bf16(runtime, "cpu", training=True)
    assert not precision.use_bf16(runtime, "cuda") and not precision.use_bf16(runtime, "cuda", training=True)
    runtime = RuntimeParams(amp_bf16=True, cpu_bf16="off", cpu_bf16_train="on")
    assert not precision.use_bf16(runtime, "cpu") and precision.use_bf16(runtime, "cpu", training=True)
    assert precision.use_bf16(runtime, torch.device("cuda", 0)) and precision.use_bf16(runtime, "cuda", training=True)
    assert not precision.use_bf16(runtime, "meta")


def test_inference_autocast_runs_convolutions_in_bf16_only_when_on():
    conv = torch.nn.Conv2d(3, 4, 3)
    image = torch.randn(1, 3, 8, 8)
    with precision.inference_autocast(RuntimeParams(cpu_bf16="on"), "cpu"):
        assert conv(image).dtype == torch.bfloat16
        with precision.full_precision("cpu"):
            assert conv(image).dtype == torch.float32
    with precision.inference_autocast(RuntimeParams(cpu_bf16="off"), "cpu"):
        assert conv(image).dtype == torch.float32
    with precision.inference_autocast(RuntimeParams(cpu_bf16="on"), "meta"):  # no autocast there: a no-op
        assert conv(image).dtype == torch.float32


def test_cpu_bf16_train_switches_autocast_in_the_training_loop(tmp_path, monkeypatch):
    from auxseg.engine import OptimParams, train

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    images = torch.randn(4, 3, 8, 8)
    dataset = [{"image": images[i], "target": torch.tensor(i % 2)} for i in range(4)]

    for setting, expected in (("on", True), ("off", False)):
        seen = []

        def loss(model, batch, device):
            seen.append(torch.is_autocast_enabled("cpu"))
            logits = model(batch["image"]).mean((2, 3))
            return {"loss": F.cross_entropy(logits, batch["target"])}

        model = torch.nn.Conv2d(3, 2, 3)
        train(model, dataset, loss, param_groups=[{"params": model.parameters(), "lr_mult": 1.0, "name": "all"}],
              optim=OptimParams(epochs=1, batch_size=2, lr=0.01, log_every=1),
              runtime=RuntimeParams(device="cpu", cpu_bf16="on", cpu_bf16_train=setting), seed=0,
              checkpoint_dir=tmp_path / setting, fingerprint="bf16")
        assert seen and all(flag is expected for flag in seen), setting


# ------------------------------------------------------------------------------------------------ fp32 numerics
def test_cam_normalisation_upcasts_low_precision_maps():
    from auxseg.cam import normalize_cams

    cams = torch.randn(1, 3, 5, 6)
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = normalize_cams(cams.bfloat16(), labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, normalize_cams(cams.bfloat16().float(), labels), rtol=0, atol=0)
    assert normalize_cams(cams.double(), labels).dtype == torch.float64  # float64 stays float64


def test_the_label_inputs_are_fp32_and_unchanged_by_autocast():
    from auxseg.models.auxsegnet import AuxSegNet
    from auxseg.steps.update_labels import forward_label_outputs, label_inputs_from_output

    torch.manual_seed(0)
    model = AuxSegNet.from_backbone_name("tiny", 3, branch_channels=8).eval()
    labels = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = forward_label_outputs(model, torch.randn(1, 3, 40, 48))
        assert output.cam.dtype == torch.bfloat16  # the forward did run in bf16
        cams, saliency = label_inputs_from_output(output, labels, (40, 48))
    with torch.inference_mode():
        cams_fp32, saliency_fp32 = label_inputs_from_output(output, labels, (40, 48))
    assert cams.dtype == np.float32 and saliency.dtype == np.float32
    np.testing.assert_array_equal(cams, cams_fp32)
    np.testing.assert_array_equal(saliency, saliency_fp32)


def test_the_affinity_softmax_is_fp32_under_autocast():
    from auxseg.affinity import task_affinity

    query, key = torch.randn(1, 4, 3, 5).bfloat16(), torch.randn(1, 4, 3, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        affinity = task_affinity(query, key)
    assert affinity.dtype == torch.float32
    torch.testing.assert_close(affinity.sum(-1), torch.ones(1, 15), rtol=0, atol=1e-6)


class _FixedCams(torch.nn.Module):
    """A 'model' whose CAMs are a fixed bf16 map (what a forward under autocast returns)."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def cams(self, batch: torch.Tensor) -> torch.Tensor:
        size = batch.shape[-2:]
        maps = F.interpolate(self.maps, size=size, mode="nearest").expand(batch.shape[0], -1, -1, -1)
        return maps.bfloat16()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.cams(batch)


def test_multiscale_cams_and_probabilities_post_process_in_fp32_under_autocast():
    from auxseg.cam import multiscale_cams
    from auxseg.inference import multiscale_probs

    torch.manual_seed(0)
    model = _FixedCams(torch.randn(1, 3, 4, 5))
    image = torch.randn(1, 3, 16, 20)
    labels = np.array([1, 1, 0])
    outside = multiscale_cams(model, image, labels, scales=(1.0, 0.5), flip=True)
    outside_probs = multiscale_probs(model, image, scales=(1.0, 0.5), flip=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = multiscale_cams(model, image, labels, scales=(1.0, 0.5), flip=True)
        inside_probs = multiscale_probs(model, image, scales=(1.0, 0.5), flip=True)
    assert inside.dtype == np.float32 and inside_probs.dtype == torch.float32
    np.testing.assert_array_equal(inside, outside)
    torch.testing.assert_close(inside_probs, outside_probs, rtol=0, atol=0)


def test_the_losses_are_fp32_under_autocast_whatever_the_logits_precision():
    from auxseg.losses import classification_loss, saliency_bce, segmentation_ce

    torch.manual_seed(0)
    seg = torch.randn(2, 4, 6, 7).bfloat16()
    sal = torch.randn(2, 1, 6, 7).bfloat16()
    cls = torch.randn(2, 3).bfloat16()
    target = torch.randint(0, 4, (2, 24, 28))
    saliency = torch.rand(2, 24, 28)
    image_labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = (segmentation_ce(seg, target), saliency_bce(sal, saliency), classification_loss(cls, image_labels))
    expected = (segmentation_ce(seg.float(), target), saliency_bce(sal.float(), saliency),
                classification_loss(cls.float(), image_labels))
    for value, reference in zip(got, expected):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ agreement
CAM_TOLERANCE = 0.1
"""Max abs difference of the normalised CAMs (values in [0, 1]) between bf16 and fp32 on the tiny model."""
LABEL_AGREEMENT = 0.99
"""Min share of pixels with the same argmax label between bf16 and fp32."""


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_inference_agrees_with_fp32_on_a_small_input(seed):
    """The stage functions (CAMs of make_cams, label inputs of update_labels, DeepLab probabilities of evaluate)
    under bf16 autocast agree with fp32 within the stated tolerances (random weights, 64×80 image, tiny backbone)."""
    from auxseg.cam import multiscale_cams
    from auxseg.data.training import normalize_image
    from auxseg.inference import multiscale_probs
    from auxseg.models.auxsegnet import AuxSegNet
    from auxseg.models.classifier import CamClassifier
    from auxseg.models.deeplab import DeepLab
    from auxseg.steps.update_labels import predict_label_inputs
    from auxseg.tools.bench_forward import label_agreement
    from auxseg.tools.bench_label_update import synthetic_inputs

    rgb, _, labels = synthetic_inputs(seed, 64, 80, 4, 2)
    image = normalize_image(rgb).unsqueeze(0)
    torch.manual_seed(seed)
    classifier = CamClassifier.from_backbone_name("tiny", 4).eval()
    auxsegnet = AuxSegNet.from_backbone_name("tiny", 4, branch_channels=16).eval()
    deeplab = DeepLab.from_backbone_name("tiny", 5, head_channels=32).eval()

    def outputs(enabled: bool):
        runtime = RuntimeParams(cpu_bf16="on" if enabled else "off")
        with torch.inference_mode(), precision.inference_autocast(runtime, "cpu"):
            cams = multiscale_cams(classifier, image, labels, scales=(1.0, 0.5), flip=True)
            label_cams, saliency = predict_label_inputs(auxsegnet, image, labels)
            probs = multiscale_probs(deeplab, image, scales=(1.0,), flip=False).numpy()
        return cams, label_cams, saliency, probs

    fp32, bf16 = outputs(False), outputs(True)
    present = labels.astype(bool)
    for name, index in (("cams", 0), ("label cams", 1)):
        assert np.abs(fp32[index] - bf16[index]).max() < CAM_TOLERANCE, name
        assert label_agreement(fp32[index][present], bf16[index][present]) >= LABEL_AGREEMENT, name
    assert np.abs(fp32[2] - bf16[2]).max() < CAM_TOLERANCE
    assert label_agreement(fp32[3], bf16[3]) >= LABEL_AGREEMENT
    assert not np.array_equal(fp32[1], bf16[1])  # bf16 did run: the outputs are close, not equal


# ------------------------------------------------------------------------------------------------ tools
def test_bench_forward_reports_both_precisions_and_rejects_bad_arguments(tmp_path, capsys):
    import json

    from auxseg.tools.bench_forward import STAGES, main

    out = tmp_path / "forward.json"
    assert main(["--backbone", "tiny", "--size", "32x40", "--repeats", "1", "--warmup", "0", "--classes", "3",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["stages"]) == set(STAGES)
    for figures in result["stages"].values():
        assert figures["fp32_min_s"] > 0 and figures["bf16_min_s"] > 0 and figures["ratio"] > 0
        assert 0.0 <= figures["label_agreement"] <= 1.0
    printed = capsys.readouterr().out
    assert "ratio" in printed and all(stage in printed for stage in STAGES)
    for argv in (["--size", "375"], ["--size", "0x5"], ["--stages", "cam,nope"], ["--repeats", "0"],
                 ["--backbone", "no_such_backbone"]):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2


def test_predict_with_bf16_agrees_with_its_fp32_labels(tmp_path):
    from auxseg.io import load_label_png, save_jpeg
    from auxseg.models.deeplab import DeepLab
    from auxseg.normalization import IMAGENET
    from auxseg.steps.common import save_model
    from auxseg.tools.bench_label_update import synthetic_inputs
    from auxseg.tools.predict import run

    torch.manual_seed(0)
    model = DeepLab.from_backbone_name("tiny", 4, output_stride=8, head_channels=16)
    model_file = tmp_path / "deeplab.pt"
    save_model(model_file, model, normalization=IMAGENET, kind="deeplab", backbone="tiny", output_stride=8, head_channels=16, num_classes=4,
               class_names=["background", "a", "b", "c"], trained_on="r1")
    photo = tmp_path / "photos" / "photo.jpg"
    save_jpeg(photo, synthetic_inputs(0, 48, 64, 3, 2)[0])
    for setting in ("off", "on"):
        assert run(model_file, [str(photo)], tmp_path / setting, device="cpu", bf16=setting) == []
    fp32, bf16 = (load_label_png(tmp_path / setting / "photo.png") for setting in ("off", "on"))
    assert (fp32 == bf16).mean() >= LABEL_AGREEMENT


def test_bf16_inference_runs_channels_last_and_fp32_keeps_its_layout():
    from auxseg.runtime import inference_memory_format, inference_model

    assert inference_memory_format("cpu", True) == torch.channels_last
    assert inference_memory_format("cpu", False) == torch.contiguous_format
    assert inference_memory_format("cuda", True) == torch.contiguous_format
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert inference_model(model, RuntimeParams(cpu_bf16="off"), "cpu") is model
    assert model[0].weight.is_contiguous()
    inference_model(model, RuntimeParams(cpu_bf16="on"), "cpu")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) and not model[0].weight.is_contiguous()

