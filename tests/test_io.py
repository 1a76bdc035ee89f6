"""PNG round trips, grey maps in mode 'L', image conversion and atomic writes."""

import numpy as np
import pytest
from PIL import Image

from auxseg import io


def test_label_png_round_trip_keeps_indices_and_palette(tmp_path):
    label = np.array([[0, 1, 20], [255, 7, 0]], dtype=np.uint8)
    path = tmp_path / "a.png"
    io.save_label_png(path, label)
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[:6]).reshape(2, 3)
    np.testing.assert_array_equal(palette[1], [128, 0, 0])  # VOC colour of class 1 (aeroplane)
    np.testing.assert_array_equal(io.load_label_png(path), label)


def test_grey_png_is_mode_L_and_round_trips(tmp_path):
    values = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "s.png"
    io.save_gray_png(path, values)
    with Image.open(path) as image:
        assert image.mode == "L"
    back = io.load_gray_png(path)
    np.testing.assert_allclose(back, values, atol=0.5 / 255)
    assert back.max() == 1.0  # not the all-zero read of a palette PNG without palette


def test_palette_png_without_palette_loses_values_which_is_why_grey_maps_use_mode_L(tmp_path):
    # The published AuxSegNet bug: a saliency map saved as mode 'P' with no palette. On current Pillow the
    # written palette is too short and the values do not survive; save_gray_png writes mode 'L' instead.
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp, mode="P").save(tmp_path / "bug.png")
    assert not np.array_equal(io.load_label_png(tmp_path / "bug.png"), ramp)
    io.save_gray_png(tmp_path / "ok.png", ramp / 255.0)
    np.testing.assert_array_equal(np.rint(io.load_gray_png(tmp_path / "ok.png") * 255).astype(np.uint8), ramp)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16"])
def test_load_image_rgb_converts_modes(tmp_path, mode):
    rgb = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    image = Image.fromarray(rgb, "RGB")
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 200)
        path = tmp_path / "x.png"
    else:
        image = image.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    out = io.load_image_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)


def test_truncated_and_missing_images_name_the_file(tmp_path):
    path = tmp_path / "t.jpg"
    io.save_jpeg(path, np.full((64, 64, 3), 120, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.DataError, match="t.jpg"):
        io.load_image_rgb(path)
    with pytest.raises(io.DataError, match="nope.png: file not found"):
        io.load_label_png(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(io.DataError, match="junk.png"):
        io.load_gray_png(tmp_path / "junk.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "file.txt"
    with pytest.raises(RuntimeError):
        with io.atomic_write(target, "w") as handle:
            handle.write("partial")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
    io.save_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_bad_label_arrays_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        io.save_label_png(tmp_path / "x.png", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="0..255"):
        io.save_label_png(tmp_path / "x.png", np.array([[300]]))
    assert not (tmp_path / "x.png").exists()


def test_npz_is_byte_deterministic(tmp_path):
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    io.save_npz(tmp_path / "a.npz", cams=array, classes=np.array([1, 3]))
    io.save_npz(tmp_path / "b.npz", cams=array, classes=np.array([1, 3]))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as data:
        np.testing.assert_array_equal(data["cams"], array)


def test_jpeg_bytes_are_deterministic(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    io.save_jpeg(tmp_path / "a.jpg", image)
    io.save_jpeg(tmp_path / "b.jpg", image)
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
