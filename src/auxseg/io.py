"""Image and label I/O with atomic writes.

Label maps are palette PNGs of class indices (VOC palette), values 0..K and 255 (ignore).
Grey maps (saliency, confidence) are 8-bit mode-'L' PNGs: a palette-mode PNG written without a
palette reads back as zeros on current Pillow (the published AuxSegNet code has exactly this bug). Grey and RGB
readers scale by the file's real bit depth (16-bit PNG/TIFF: value / 65535) and refuse modes whose range is
ambiguous (32-bit integer 'I', float 'F' outside [0, 1]) with an error naming the file and its mode.
Every writer goes through :func:`atomic_write`, so a killed stage never leaves a half-written file.

JSON is written by one writer (:func:`json_text`, :func:`save_json`): NaN becomes ``null`` (an undefined metric, e.g.
the IoU of a class absent from both prediction and ground truth) and ±infinity is refused, so every file is strict
JSON. Text inputs (split lists, label files, class names) are read by :func:`read_text_file` (UTF-8, with or without
a byte-order mark; anything else is a DataError naming the file) and JSON inputs by :func:`load_json`, which also
refuses duplicate keys and the non-JSON tokens NaN/Infinity.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from auxseg import IGNORE_INDEX


class DataError(ValueError):
    """Bad input data (missing, unreadable or inconsistent file). The message names the file."""


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: (num_entries, 3) uint8, entry 255 is (224, 224, 192)."""
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE_BYTES = voc_palette().reshape(-1).tobytes()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_image(path: str | os.PathLike, image: Image.Image, **save_kwargs: Any) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=save_kwargs.pop("format", "PNG"), **save_kwargs)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def save_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a label map (H, W) of class indices 0..K and 255 as a VOC-palette PNG.

    Integer arrays, and float arrays holding only finite whole numbers, are accepted; a non-integer, NaN or
    infinite value or one outside 0..255 is a ValueError naming ``path``.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D (H, W), got shape {label.shape}")
    label = as_label_indices(label, str(path))
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255, got {label.min()}..{label.max()}")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE_BYTES)
    _write_image(path, image)


def as_label_indices(labels: np.ndarray, where: str) -> np.ndarray:
    """int64 copy/view of a label map of class indices.

    Integer dtypes pass; float maps pass only when every value is a finite whole number (a float copy of a label
    map). Soft scores or probabilities passed by mistake, NaN, ±infinity, bool and other dtypes are a ValueError
    starting with ``where`` (a file or argument name).
    """
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64, copy=False)
    if not np.issubdtype(labels.dtype, np.floating):
        raise ValueError(f"{where}: label map must hold integer class indices, got dtype {labels.dtype}")
    if not np.isfinite(labels).all():
        raise ValueError(f"{where}: label map holds NaN or infinity")
    if not np.array_equal(labels, np.round(labels)):
        raise ValueError(
            f"{where}: label map holds non-integer values (probabilities or scores? pass the argmax over classes)"
        )
    return labels.astype(np.int64)


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as raw indices: uint8 (H, W). Palette PNGs give their indices, 'L' PNGs their values."""
    image = _open_image(path)
    if image.mode not in ("P", "L"):
        raise DataError(f"{path}: a label map must be a palette or 8-bit grey PNG, got mode {image.mode}")
    return np.asarray(image, dtype=np.uint8).copy()


def save_gray_png(path: str | os.PathLike, values: np.ndarray) -> None:
    """Write a map (H, W) with values in [0, 1] as an 8-bit grey ('L') PNG, value = round(255 * x).

    Values outside [0, 1] are clipped; NaN or infinity is a ValueError naming ``path``.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"{path}: grey map must be 2-D (H, W), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: grey map holds NaN or infinity")
    grey = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    _write_image(path, Image.fromarray(grey, mode="L"))


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_values(path: str | os.PathLike, image: Image.Image) -> np.ndarray:
    """float32 (H, W) in [0, 1] of a grey image at its real bit depth; DataError for an ambiguous mode."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return (np.asarray(image).astype(np.float64) / 65535.0).astype(np.float32)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 1)):
            raise DataError(f"{path}: float image (mode F) must hold finite values in [0, 1]")
        return values.copy()
    if image.mode in ("I", "I;32", "I;32B", "I;32L"):
        raise DataError(
            f"{path}: 32-bit integer image (mode {image.mode}) has no defined value range; "
            "save it as an 8- or 16-bit grey PNG"
        )
    if image.mode == "1":
        return np.asarray(image, dtype=np.float32)
    if image.mode != "L":
        image = image.convert("L")  # 8 bits per channel (RGB, RGBA, LA, P, CMYK, ...): luminance
    return np.asarray(image, dtype=np.float32) / 255.0


def load_gray_png(path: str | os.PathLike) -> np.ndarray:
    """Read a grey image as float32 (H, W) in [0, 1]: 8-bit value / 255, 16-bit value / 65535 (modes I;16*),
    mode '1' as 0/1, float 'F' as is if within [0, 1]; colour images by luminance. DataError naming the file and
    its mode for 32-bit integer images or out-of-range float images."""
    path = Path(path)
    return _grey_values(path, _open_image(path))


def _open_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable or truncated image ({error})") from error


def load_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read any image (grey, RGBA, palette, CMYK, ...) as uint8 RGB (H, W, 3)."""
    image = _open_image(path)
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F", "I;32", "I;32B", "I;32L"):
        grey = _grey_values(path, image)  # 16-bit scaled by 65535; ambiguous modes refused
        values = np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(values[..., None], 3, axis=2)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: unreadable image ({error})") from error
    return height, width


def save_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 92) -> None:
    """Write uint8 RGB (H, W, 3) as a baseline JPEG (deterministic bytes for the same pixels)."""
    _write_image(path, Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB"), format="JPEG", quality=quality)


def _json_ready(value: Any, where: str) -> Any:
    """``value`` with NaN → None and numpy scalars/arrays → Python; ValueError naming the key on ±infinity."""
    if isinstance(value, Mapping):
        return {key: _json_ready(item, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError(f"{where or 'value'}: {value} cannot be written as JSON (only NaN is, as null)")
    return value


def json_text(data: Any, where: str = "") -> str:
    """Strict JSON text (indent 2, sorted keys, trailing newline): NaN → ``null``, ±infinity a ValueError naming
    the key (prefixed with ``where``, e.g. the file)."""
    try:
        ready = _json_ready(data, "")
    except ValueError as error:
        raise ValueError(f"{where}: {error}" if where else str(error)) from None
    return json.dumps(ready, indent=2, sort_keys=True, allow_nan=False) + "\n"


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write :func:`json_text` of ``data`` atomically (NaN written as ``null``; ±infinity refused)."""
    text = json_text(data, str(path))
    with atomic_write(path, "w") as handle:
        handle.write(text)


_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def read_text_file(path: str | os.PathLike, what: str = "text file") -> str:
    """Text of a UTF-8 file (a leading UTF-8 byte-order mark is dropped).

    DataError naming ``path`` when it is missing or unreadable, starts with a UTF-16/UTF-32 byte-order mark, or is
    not valid UTF-8 (the message gives the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: unreadable {what} ({error})") from error
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise DataError(f"{path}: {what} is {name}-encoded (byte-order mark {bom!r}); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: {what} is not UTF-8 text (invalid byte {data[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a strict JSON file read by :func:`read_text_file`.

    DataError naming ``path`` on invalid JSON, a duplicate key in any object (naming the key), or the non-standard
    tokens NaN / Infinity / -Infinity.
    """
    path = Path(path)
    text = read_text_file(path, what)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise DataError(f"{path}: duplicate key '{key}'")
            result[key] = value
        return result

    def no_constant(token: str) -> Any:
        raise DataError(f"{path}: {token} is not valid JSON (write null for an undefined number)")

    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON ({error})") from error


def save_metrics(path: str | os.PathLike, report: dict, details_path: str | os.PathLike,
                 detail_keys: Iterable[str]) -> dict:
    """Split ``report`` in two JSON files: the headline figures go to ``path`` (a DVC metrics file, one
    ``dvc exp show`` column per key) and the keys ``detail_keys`` (per-class values, sweeps, diagnostics) to
    ``details_path`` (kept in git beside it, not declared as a metric, so that ``dvc exp show`` stays readable with 21
    or 81 classes). Keys of ``detail_keys`` that ``report`` lacks (nothing scored without ground truth) are skipped;
    the details file is then ``{}``. Returns the headline dict.
    """
    details = {key: report[key] for key in detail_keys if key in report}
    headline = {key: value for key, value in report.items() if key not in details}
    save_json(details_path, details)
    save_json(path, headline)
    return headline


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write compressed arrays atomically (deterministic bytes for the same arrays)."""
    buffer = io.BytesIO()
    # np.savez stamps each member with the wall-clock time; a fixed date keeps cached outputs reproducible.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def colorize_label(label: np.ndarray) -> np.ndarray:
    """Label map (H, W) → RGB (H, W, 3) uint8 using the VOC palette; ignore pixels are light grey."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]


__all__ = [
    "DataError",
    "IGNORE_INDEX",
    "as_label_indices",
    "atomic_write",
    "colorize_label",
    "image_size",
    "json_text",
    "load_gray_png",
    "load_json",
    "load_image_rgb",
    "load_label_png",
    "read_text_file",
    "save_gray_png",
    "save_jpeg",
    "save_json",
    "save_label_png",
    "save_metrics",
    "save_npz",
    "voc_palette",
]
