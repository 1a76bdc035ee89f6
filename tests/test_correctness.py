"""Issue 13: failure kinds replayed from public bug reports, each with its right value or a clear error.

1 non-finite numbers in JSON, 2 16-bit images, 3 duplicate ids, 4 text that is not UTF-8, 5 round names,
6 NaN/inf in CAMs, 7 non-integer label maps, 9 the published order of nonlinearity and resampling,
10 the ``published`` profile. (Kind 8, resume, is in test_engine.py and test_resume_stage.py.)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from auxseg.cam import cam_seed_labels, normalize_cams
from auxseg.cli import run_stage
from auxseg.config import RoundParams, round_chain
from auxseg.data import stats
from auxseg.data.datasets import read_id_list, read_image_labels
from auxseg.io import (
    DataError,
    json_text,
    load_gray_png,
    load_image_rgb,
    load_json,
    load_label_png,
    save_gray_png,
    save_json,
    save_label_png,
)
from auxseg.metrics import SaliencyMetric, SegmentationMetric
from auxseg.params import ParamError, load_stage_params, read_params_file
from auxseg.saliency import load_external_saliency
from auxseg.steps.eval_classifier import average_precision

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["background", "aeroplane", "bicycle", "person"]


def _no_constant(token: str):
    raise AssertionError(f"non-JSON token {token}")


def strict_loads(text: str):
    return json.loads(text, parse_constant=_no_constant)


# ---------------------------------------------------------------------------------------------------------------
# 1. Non-finite numbers in metrics files


def test_metrics_of_classes_absent_from_the_data_are_written_as_null(tmp_path):
    # masks holding only background and one class (3 of 4 classes never appear): undefined IoUs
    metric = SegmentationMetric(4, class_names=NAMES)
    gt = np.array([[0, 0, 3, 3], [0, 0, 3, 3]])
    metric.update(gt, gt)
    scores = metric.compute()
    assert math.isnan(scores["per_class_iou"]["aeroplane"])
    path = tmp_path / "r0.json"
    save_json(path, {"miou": scores["miou"], "per_class_iou": scores["per_class_iou"], "iou": scores["iou"]})
    text = path.read_text()
    assert "NaN" not in text
    data = strict_loads(text)
    assert data["miou"] == 1.0
    assert data["per_class_iou"] == {"aeroplane": None, "background": 1.0, "bicycle": None, "person": 1.0}
    assert data["iou"] == [1.0, None, None, 1.0]


def test_classification_ap_of_a_class_absent_from_val_is_null(tmp_path):
    ap = average_precision(np.array([0.2, 0.9]), np.array([0.0, 0.0]))
    path = tmp_path / "classification.json"
    save_json(path, {"ap_per_class": {"cow": ap, "dog": np.float32(0.5)}})
    assert strict_loads(path.read_text()) == {"ap_per_class": {"cow": None, "dog": 0.5}}


def test_json_writer_refuses_infinity_naming_the_key_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"out\.json: a\.b\[1\]: inf"):
        save_json(tmp_path / "out.json", {"a": {"b": [1.0, float("inf")]}})
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(ValueError, match="-inf"):
        json_text(np.array([-np.inf]))


def test_committed_metrics_files_are_strict_json():
    files = sorted((ROOT / "metrics").rglob("*.json"))
    for path in files:
        strict_loads(path.read_text())


def test_json_reader_refuses_nan_tokens(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"miou": NaN}')
    with pytest.raises(DataError, match=r"m\.json: NaN is not valid JSON"):
        load_json(path)


def test_dataset_stats_json_output_is_strict(tmp_path, capsys):
    root = _stats_dataset(tmp_path, ["a", "b"])
    assert stats.main([str(root), "--json"]) == 0
    data = strict_loads(capsys.readouterr().out)
    # bicycle and person are in no mask: their mean area fraction is undefined
    assert data["splits"]["train"]["class_area_fraction"]["bicycle"] is None


# ---------------------------------------------------------------------------------------------------------------
# 2. 16-bit images


def _gradient16() -> np.ndarray:
    return (np.arange(16, dtype=np.uint32) * 65535 // 15).astype(np.uint16).reshape(4, 4)


def test_external_saliency_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    values = _gradient16()
    Image.fromarray(values).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == "I;16"
    saliency = load_external_saliency(tmp_path, "x", (4, 4))
    np.testing.assert_allclose(saliency, values / 65535.0, atol=1e-7)
    assert int((saliency > 0.5).sum()) == 8
    assert saliency.max() == 1.0


def test_16_bit_big_endian_and_8_bit_grey_readers(tmp_path):
    values = _gradient16()
    Image.fromarray(values.astype(">u2")).save(tmp_path / "big.tif")
    assert Image.open(tmp_path / "big.tif").mode == "I;16B"
    np.testing.assert_allclose(load_gray_png(tmp_path / "big.tif"), values / 65535.0, atol=1e-7)
    save_gray_png(tmp_path / "eight.png", values / 65535.0)
    np.testing.assert_allclose(load_gray_png(tmp_path / "eight.png"), values / 65535.0, atol=0.5 / 255 + 1e-6)


def test_16_bit_grey_image_becomes_rgb_at_its_bit_depth(tmp_path):
    Image.fromarray(_gradient16()).save(tmp_path / "img.png")
    rgb = load_image_rgb(tmp_path / "img.png")
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.rint(_gradient16() / 65535.0 * 255).astype(np.uint8))
    assert int((rgb[..., 0] > 127).sum()) == 8


def test_ambiguous_image_modes_are_refused_naming_file_and_mode(tmp_path):
    Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 1000).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    for reader in (load_gray_png, load_image_rgb):
        with pytest.raises(DataError, match=r"i32\.tif: .*mode I\b"):
            reader(tmp_path / "i32.tif")
    Image.fromarray(np.full((2, 2), 3.0, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: float image \(mode F\)"):
        load_gray_png(tmp_path / "f.tif")
    Image.fromarray(_gradient16()).save(tmp_path / "mask16.png")
    with pytest.raises(DataError, match=r"mask16\.png: .*mode I;16"):
        load_label_png(tmp_path / "mask16.png")


# ---------------------------------------------------------------------------------------------------------------
# 3. Duplicate ids


def test_json_label_file_with_a_duplicate_id_names_file_and_id(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"a": ["person"], "b": ["person"], "a": ["aeroplane"]}')
    with pytest.raises(DataError, match=r"labels\.json: duplicate id 'a'"):
        read_image_labels(path, NAMES)
    csv = tmp_path / "labels.csv"
    csv.write_text("id,labels\na,person\nb,person\na,aeroplane\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 4: id 'a': duplicate id"):
        read_image_labels(csv, NAMES)


def test_class_names_file_with_duplicate_keys_and_split_lists_with_duplicate_ids(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"k": 1, "k": 2}')
    with pytest.raises(DataError, match=r"x\.json: duplicate key 'k'"):
        load_json(path)
    listing = tmp_path / "train.txt"
    listing.write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"train\.txt: line 3: duplicate id 'a'"):
        read_id_list(listing)


def _stats_dataset(tmp_path: Path, ids: list[str], list_bytes: bytes | None = None) -> Path:
    root = tmp_path / "ds"
    for folder in ("JPEGImages", "SegmentationClass", "SalientMask", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "class_names.json").write_text(json.dumps(NAMES))
    (root / "image_labels.json").write_text(json.dumps({i: [1] for i in ids}))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 1
    for image_id in dict.fromkeys(ids):
        save_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        save_gray_png(root / "SalientMask" / f"{image_id}.png", (mask > 0).astype(np.float32))
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
    listing = root / "ImageSets/Segmentation/train.txt"
    listing.write_bytes(list_bytes if list_bytes is not None else "".join(f"{i}\n" for i in ids).encode())
    return root


def test_dataset_stats_refuses_a_list_with_a_duplicate_id(tmp_path, capsys):
    root = _stats_dataset(tmp_path, ["a", "b", "a"])
    assert stats.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.txt: line 3: duplicate id 'a'" in err


# ---------------------------------------------------------------------------------------------------------------
# 4. Text files that are not plain UTF-8 (decision: UTF-8 with or without BOM is read; anything else is an error)


def test_utf16_split_list_is_one_error_line_with_exit_2(tmp_path, capsys):
    root = _stats_dataset(tmp_path, ["a", "b"], list_bytes=b"\xff\xfe" + "a\nb\n".encode("utf-16-le"))
    assert stats.main([str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("error: ") and "train.txt: split list is UTF-16-encoded" in err


def test_utf8_with_bom_is_read_and_invalid_utf8_names_the_file(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_bytes(b"\xef\xbb\xbfa\nb\n")
    assert read_id_list(listing) == ("a", "b")
    labels = tmp_path / "labels.json"
    labels.write_bytes('\ufeff{"a": ["person"]}'.encode("utf-8"))
    assert read_image_labels(labels, NAMES)["a"].tolist() == [0.0, 0.0, 1.0]
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"id,labels\na,caf\xe9\n")
    with pytest.raises(DataError, match=r"labels\.csv: image-level label file is not UTF-8 text \(invalid byte 0xe9"):
        read_image_labels(csv, NAMES)
    params = tmp_path / "params.yaml"
    params.write_bytes(b"\xff\xfe" + "seed: 1\n".encode("utf-16-le"))
    with pytest.raises(ParamError, match=r"params\.yaml: params file is UTF-16-encoded"):
        read_params_file(params)


# ---------------------------------------------------------------------------------------------------------------
# 5. Round names


@pytest.mark.parametrize("name", ["r1.5", "../escape", "r/1", "1r", ""])
def test_round_names_must_be_plain_identifiers(tmp_path, name):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"rounds": {name: {"prev": "r0"}}, "final_round": "r1"}))
    with pytest.raises(ParamError, match=rf"^rounds\.{__import__('re').escape(name)}: .* is not a plain identifier"):
        load_stage_params(["rounds"], params)
    with pytest.raises(ParamError, match="is not a plain identifier"):
        round_chain({name: RoundParams(prev="r0")}, name)


def test_prev_final_round_and_the_round_argument_are_checked(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"rounds": {"r1": {"prev": "r0.x"}}}))
    with pytest.raises(ParamError, match=r"^rounds\.r1\.prev: 'r0\.x' is not a plain identifier"):
        load_stage_params(["rounds"], params)
    params.write_text(yaml.safe_dump({"final_round": "../r1"}))
    with pytest.raises(ParamError, match=r"^final_round: '\.\./r1' is not a plain identifier"):
        load_stage_params(["final_round"], params)

    def step(round_name):  # pragma: no cover - must not be reached
        raise AssertionError("ran")

    assert run_stage(step, [], ["--params", str(params), "--round", "../escape"], per_round=True) == 2
    assert "error: --round: '../escape' is not a plain identifier" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# 6. NaN or infinity in CAMs


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_cams_are_refused(bad):
    cams = np.ones((2, 3, 3), dtype=np.float32)
    cams[1, 0, 0] = bad  # class 1 is absent from the image: still refused
    labels = np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        normalize_cams(cams, labels)
    with pytest.raises(ValueError, match="NaN or infinity"):
        normalize_cams(torch.from_numpy(cams), torch.from_numpy(labels))
    with pytest.raises(ValueError, match="NaN or infinity"):
        cam_seed_labels(cams, labels, 0.2)


def test_float16_and_large_peak_cams_stay_below_one():
    cams = np.array([[[2000.0, 1000.0], [0.0, -5.0]]], dtype=np.float16)
    normalised = normalize_cams(cams, np.array([1.0]))
    assert normalised.dtype == np.float32
    assert 0.0 <= normalised.min() and normalised.max() < 1.0
    np.testing.assert_allclose(normalised[0], [[1.0, 0.5], [0.0, 0.0]], atol=1e-6)
    as_torch = normalize_cams(torch.from_numpy(cams), torch.ones(1))
    assert as_torch.dtype == torch.float32 and float(as_torch.max()) < 1.0
    big = normalize_cams(np.array([[[1e6, 1.0]]], dtype=np.float32), np.array([1.0]))
    assert big.max() < 1.0


# ---------------------------------------------------------------------------------------------------------------
# 7. Non-integer label maps (decision: integer dtypes, and float maps of finite whole numbers, are accepted)


def test_soft_or_non_finite_predictions_are_refused_by_the_metric():
    metric = SegmentationMetric(3)
    gt = np.array([[1, 2], [0, 0]])
    with pytest.raises(ValueError, match="prediction: label map holds non-integer values"):
        metric.update(np.array([[1.7, 2.0], [0.9, 0.2]]), gt)
    with pytest.raises(ValueError, match="ground truth: label map holds NaN or infinity"):
        metric.update(gt, np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="dtype bool"):
        metric.update(gt.astype(bool), gt)
    assert metric.confusion.sum() == 0
    metric.update(gt.astype(np.float32), torch.as_tensor(gt))  # whole numbers in a float array: accepted
    assert metric.compute()["miou"] == 1.0


def test_label_and_grey_writers_refuse_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"a\.png: label map holds non-integer values"):
        save_label_png(tmp_path / "a.png", np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"b\.png: label map holds NaN or infinity"):
        save_label_png(tmp_path / "b.png", np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match=r"c\.png: grey map holds NaN or infinity"):
        save_gray_png(tmp_path / "c.png", np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="saliency holds NaN or infinity"):
        SaliencyMetric().update(np.array([[np.nan, 0.5]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="scores hold NaN"):
        average_precision(np.array([np.nan, 0.1]), np.array([1.0, 0.0]))
    assert not list(tmp_path.iterdir())
    save_label_png(tmp_path / "ok.png", np.array([[0.0, 255.0]]))
    assert load_label_png(tmp_path / "ok.png").tolist() == [[0, 255]]


# ---------------------------------------------------------------------------------------------------------------
# 9. Nonlinearity, then resampling, as the published code does


def _bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) bilinear interpolation matrix, align_corners=False (half-pixel centres, edge clamp)."""
    weights = np.zeros((size_out, size_in))
    for out in range(size_out):
        source = max((out + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(math.floor(source)), size_in - 1)
        high = min(low + 1, size_in - 1)
        frac = source - low
        weights[out, low] += 1 - frac
        weights[out, high] += frac
    return weights


def test_label_update_takes_the_sigmoid_on_the_grid_then_upsamples():
    from auxseg.steps.update_labels import label_inputs_from_output

    logit = np.array([[-6.0, 6.0], [6.0, -6.0]])
    output = SimpleNamespace(
        cam=torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), affinity=None,
        sal_refined=torch.tensor(logit, dtype=torch.float32)[None, None],
    )
    cams, saliency = label_inputs_from_output(output, np.array([1.0]), (4, 4))
    rows = cols = _bilinear_weights(2, 4)
    # hand computation: rows/cols weights (1, 0), (.75, .25), (.25, .75), (0, 1)
    assert rows[1].tolist() == [0.75, 0.25]
    sigmoid = 1.0 / (1.0 + np.exp(-logit))
    expected = rows @ sigmoid @ cols.T
    np.testing.assert_allclose(saliency, expected, atol=1e-6)
    # the other order (upsample the logit, then sigmoid) gives 0.18 instead of 0.38 at (1, 1)
    other = 1.0 / (1.0 + np.exp(-(rows @ logit @ cols.T)))
    assert expected[1, 1] == pytest.approx(0.3756, abs=1e-4) and other[1, 1] == pytest.approx(0.1824, abs=1e-4)
    np.testing.assert_allclose(cams[0], rows @ (np.array([[1, 2], [3, 4]]) / (4 + 1e-5)) @ cols.T, atol=1e-6)


@pytest.mark.parametrize("scale, grid", [(1.0, (30, 40)), (0.5, (15, 20)), (0.3, (9, 12))])
def test_label_update_forward_runs_on_the_image_resized_by_label_scale(scale, grid):
    from auxseg.steps.update_labels import predict_label_inputs

    seen = []

    def model(image, return_affinity):
        assert return_affinity
        seen.append(tuple(image.shape[-2:]))
        return SimpleNamespace(cam=image[:, :1].abs() + 1.0, affinity=None, sal_refined=image[:, :1])

    image = torch.rand(1, 3, 30, 40)
    cams, saliency = predict_label_inputs(model, image, np.array([1.0]), scale)
    assert seen == [grid]                       # the network saw the resized image ...
    assert cams.shape == (1, 30, 40) and saliency.shape == (30, 40)  # ... the labels are at the image's size
    if scale == 1.0:                            # full size: no resampling at all, the published path
        np.testing.assert_allclose(saliency, torch.sigmoid(image[0, 0]).numpy(), atol=1e-6)


def test_label_scale_is_validated():
    from auxseg.config import PseudoLabelParams
    from auxseg.schema import ParamError, parse_section

    assert parse_section(PseudoLabelParams, {"label_scale": 0.5}, "pseudo_labels").label_scale == 0.5
    for bad in (0.0, -1.0, 5.0, "half"):
        with pytest.raises(ParamError, match=r"pseudo_labels\.label_scale"):
            parse_section(PseudoLabelParams, {"label_scale": bad}, "pseudo_labels")
    assert PseudoLabelParams().label_scale == 1.0


def test_multiscale_probs_order_follows_each_published_code():
    from auxseg.inference import multiscale_probs

    logits = torch.tensor([[[[4.0, -4.0]], [[-4.0, 4.0]]]])  # (1, 2, 1, 2)
    image = torch.zeros(1, 3, 1, 4)
    cols = _bilinear_weights(2, 4)
    grid_softmax = torch.softmax(logits, dim=1)[0, :, 0].numpy()  # (2, 2)
    on_grid = multiscale_probs(lambda x: logits, image, softmax_on_grid=True)
    np.testing.assert_allclose(on_grid[:, 0].numpy(), grid_softmax @ cols.T, atol=1e-6)  # 1-Stage
    upsampled = logits[0, :, 0].numpy() @ cols.T
    expected = np.exp(upsampled) / np.exp(upsampled).sum(axis=0, keepdims=True)
    default = multiscale_probs(lambda x: logits, image)
    np.testing.assert_allclose(default[:, 0].numpy(), expected, atol=1e-6)  # AuxSegNet / DeepLab
    assert not np.allclose(on_grid.numpy(), default.numpy(), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# 10. The published profile


def test_published_profile_sets_the_released_code_values(tmp_path):
    from auxseg.params import validate_params_file
    from auxseg.tools.apply_profile import apply_profile, available_profiles

    assert "published" in available_profiles()
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_profile("published", params)
    parsed = validate_params_file(params)
    net = parsed["auxsegnet"]
    assert (net.optim.preset, net.optim.lr, net.optim.epochs, net.optim.batch_size) == ("published_code", 0.0007, 15, 4)
    assert net.optim.effective_momentum == 1e-5 and net.optim.effective_weight_decay == 0.0
    assert (net.augment.pad_label, net.augment.crop_size, net.branch_channels) == ("background", 321, 128)
    assert (net.extra_dilated_conv, net.refine_target, net.augment.color_jitter) == (True, "logits", 0.0)
    assert (parsed["evaluate"].scales, parsed["evaluate"].flip) == ([1.0], False)
    assert parsed["pseudo_labels"].cam_threshold == 0.2 and parsed["pseudo_labels"].saliency_threshold == 0.06
    readme = (ROOT / "README.md").read_text()
    assert "| what | released code (`published` profile) | library default | paper |" in readme
    assert "released code (library default)" not in readme
