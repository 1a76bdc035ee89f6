"""Image and label I/O with atomic writes.

Label maps are palette PNGs of class indices (VOC palette), values 0..K and 255 (ignore).
Grey maps (saliency, confidence) are 8-bit mode-'L' PNGs: a palette-mode PNG written without a
palette reads back as zeros on current Pillow (the published AuxSegNet code has exactly this bug).
Every writer goes through :func:`atomic_write`, so a killed stage never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

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
    """Write a label map (H, W) of class indices 0..K and 255 as a VOC-palette PNG."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D (H, W), got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255, got {label.min()}..{label.max()}")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE_BYTES)
    _write_image(path, image)


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as raw indices: uint8 (H, W). Palette PNGs give their indices, 'L' PNGs their values."""
    image = _open_image(path)
    if image.mode not in ("P", "L"):
        raise DataError(f"{path}: a label map must be a palette or 8-bit grey PNG, got mode {image.mode}")
    return np.asarray(image, dtype=np.uint8).copy()


def save_gray_png(path: str | os.PathLike, values: np.ndarray) -> None:
    """Write a map (H, W) with values in [0, 1] as an 8-bit grey ('L') PNG, value = round(255 * x)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"{path}: grey map must be 2-D (H, W), got shape {values.shape}")
    grey = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    _write_image(path, Image.fromarray(grey, mode="L"))


def load_gray_png(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit grey PNG (or any image, converted to 'L') as float32 (H, W) in [0, 1]."""
    image = _open_image(path)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


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


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


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
    "atomic_write",
    "colorize_label",
    "image_size",
    "load_gray_png",
    "load_image_rgb",
    "load_label_png",
    "save_gray_png",
    "save_jpeg",
    "save_json",
    "save_label_png",
    "save_npz",
    "voc_palette",
]
