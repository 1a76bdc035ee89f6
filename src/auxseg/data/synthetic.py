"""The embedded synthetic VOC-style WSSS benchmark.

Every image holds 1..``max_objects`` class objects (plus co-occurring partners) and, sometimes, class-less
salient distractors, on a textured background. The dataset is built to reproduce the failure modes weakly
supervised segmentation methods exist to fix:

1. **Discriminative part vs shared body.** An object is a body blob whose appearance (colour + mottling) is drawn
   from one distribution shared by all classes, plus a class-specific part (a "head" disc or an end band,
   about ``part_fraction`` of the object) painted with the class colour and pattern (stripes / dots / checker).
   Only the part tells the class, so a classifier's CAM covers mostly the part: CAM seeds have lower recall
   than precision. The ground-truth mask covers the whole object (body + part).
2. **Class-less salient distractors**: body-like or vividly coloured plain blobs, as salient as objects, whose
   ground truth is background. A training-free saliency prior marks them foreground.
3. **Co-occurrence**: partner pairs (1, 2), (3, 4), ...; a drawn class brings its partner with probability
   ``cooccurrence_rate``. Objects overlap; later ones occlude earlier ones.
4. **Textured, varied backgrounds**: low-chroma smooth colour fields with grain, stripes or blotches; objects
   differ from them in lightness and chroma, so frequency-tuned saliency finds objects and distractors.
5. **Varying, non-square sizes**: H and W independently uniform in [``min_side``, ``max_side``].

Layout written under ``root`` (Pascal VOC style)::

    JPEGImages/<id>.jpg             RGB, JPEG quality 90
    SegmentationClass/<id>.png      palette PNG: 0 background, 1..K classes, 255 boundary band / tiny fragments
    SalientMask/<id>.png            'L' PNG: 255 = object or distractor, 0 = background
    ImageSets/Segmentation/{train,val}.txt
    image_labels.json               {id: [sorted class indices 1..K]}
    class_names.json                ["background", <K names>]
    stats.json                      :func:`auxseg.data.stats.dataset_statistics` of the written files

A class is an image-level label iff its visible pixels number at least 1 % of the image and at least 30;
smaller visible fragments are set to 255 (ignore) in the mask, so labels and masks agree exactly.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from auxseg import IGNORE_INDEX
from auxseg.config import SyntheticParams
from auxseg.data.stats import MIN_VISIBLE_FRACTION, MIN_VISIBLE_PIXELS, dataset_statistics
from auxseg.io import atomic_write, save_gray_png, save_jpeg, save_json, save_label_png

JPEG_QUALITY = 90
MAX_SCENE_ATTEMPTS = 50
_DATASET_MARKERS = ("class_names.json", "image_labels.json")
_SPLIT_CODES = {"train": 0, "val": 1}
_SCENE_ARGUMENTS = ("num_classes", "max_objects", "distractor_rate", "cooccurrence_rate", "part_fraction", "boundary_width")

# Class appearance: part colour (sRGB in [0, 1]) and part pattern. The first six colours are the most distinct
# hues, so the default K = 6 gets one hue per class; (colour, pattern) pairs stay unique up to 21 classes.
_PART_COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.90, 0.10, 0.10)),
    ("blue", (0.10, 0.25, 0.95)),
    ("yellow", (0.98, 0.88, 0.10)),
    ("green", (0.10, 0.75, 0.20)),
    ("magenta", (0.90, 0.15, 0.85)),
    ("cyan", (0.10, 0.85, 0.90)),
    ("orange", (1.00, 0.50, 0.05)),
)
_PATTERNS = ("stripes", "dots", "checker")
MAX_CLASSES = 20


@dataclasses.dataclass(frozen=True)
class ClassAppearance:
    """The class-specific part appearance of foreground class ``index`` (1..K)."""

    index: int
    name: str
    colour: tuple[float, float, float]
    pattern: str


def class_appearances(num_classes: int) -> list[ClassAppearance]:
    """Part colour and pattern of classes 1..num_classes (fixed, independent of the seed)."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must lie in 1..{MAX_CLASSES}, got {num_classes}")
    appearances = []
    for offset in range(num_classes):
        colour_name, colour = _PART_COLOURS[offset % len(_PART_COLOURS)]
        pattern = _PATTERNS[(offset // len(_PART_COLOURS) + offset) % len(_PATTERNS)]
        appearances.append(ClassAppearance(offset + 1, f"{colour_name}_{pattern}", colour, pattern))
    return appearances


def class_names(num_classes: int) -> list[str]:
    """["background", "red_stripes", "blue_dots", ...]: K + 1 readable names."""
    return ["background"] + [appearance.name for appearance in class_appearances(num_classes)]


def partner_class(class_index: int, num_classes: int) -> int | None:
    """Fixed co-occurrence partner: 1↔2, 3↔4, ...; the last class of an odd K has none."""
    partner = class_index + 1 if class_index % 2 == 1 else class_index - 1
    return partner if 1 <= partner <= num_classes else None


# ----------------------------------------------------------------------------------------------- colour helpers
_LAB_TO_XYZ_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_RGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


def lch_to_rgb(lightness: np.ndarray, chroma: np.ndarray, hue_degrees: np.ndarray) -> np.ndarray:
    """CIE LCh(ab) (L in [0, 100], chroma >= 0, hue in degrees), broadcast arrays → sRGB float (..., 3) in [0, 1]."""
    lightness, chroma, hue_degrees = np.broadcast_arrays(
        np.asarray(lightness, dtype=np.float64), np.asarray(chroma, dtype=np.float64), np.asarray(hue_degrees, dtype=np.float64)
    )
    hue = np.deg2rad(hue_degrees)
    a = chroma * np.cos(hue)
    b = chroma * np.sin(hue)
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4.0 / 29.0)) * _LAB_TO_XYZ_WHITE
    linear = xyz @ _XYZ_TO_LINEAR_RGB.T
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


# ------------------------------------------------------------------------------------------------ field helpers
def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """Smooth random field (H, W), roughly zero mean and unit scale: a random grid with ~``cells`` cells along the
    longer side, upsampled with smoothstep-bilinear interpolation."""
    longer = max(height, width)
    grid_h = max(1, math.ceil(cells * height / longer))
    grid_w = max(1, math.ceil(cells * width / longer))
    grid = rng.standard_normal((grid_h + 1, grid_w + 1))
    ys = np.linspace(0.0, grid_h, height, endpoint=False) + rng.uniform(0.0, 1.0) * (grid_h / height)
    xs = np.linspace(0.0, grid_w, width, endpoint=False) + rng.uniform(0.0, 1.0) * (grid_w / width)
    y0 = np.minimum(ys.astype(np.int64), grid_h - 1)
    x0 = np.minimum(xs.astype(np.int64), grid_w - 1)
    ty = ys - y0
    tx = xs - x0
    ty = (ty * ty * (3 - 2 * ty))[:, None]
    tx = (tx * tx * (3 - 2 * tx))[None, :]
    top = grid[y0][:, x0] * (1 - tx) + grid[y0][:, x0 + 1] * tx
    bottom = grid[y0 + 1][:, x0] * (1 - tx) + grid[y0 + 1][:, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable blur of (H, W[, C]) with a 1-D odd-length kernel, edge padding."""
    radius = len(kernel) // 2
    pad = [(radius, radius), (0, 0)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    out = sum(weight * padded[i : i + image.shape[0]] for i, weight in enumerate(kernel))
    pad = [(0, 0), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(out, pad, mode="edge")
    return sum(weight * padded[:, i : i + image.shape[1]] for i, weight in enumerate(kernel))


def boundary_band(label: np.ndarray, width: int) -> np.ndarray:
    """Bool (H, W): pixels within a band of ``width`` px along every change of value in ``label`` (H, W).

    A pixel is in the band when the window of offsets [-width//2, width - width//2] (both axes) around it is not
    constant, so a straight edge gets a band exactly ``width`` pixels wide (width 1: the pixel before the edge).
    """
    if width <= 0:
        return np.zeros(label.shape, dtype=bool)
    before, after = width // 2, width - width // 2
    padded = np.pad(label, ((before, after), (before, after)), mode="edge")
    height, width_px = label.shape
    rows_max = np.max([padded[i : i + height] for i in range(width + 1)], axis=0)
    rows_min = np.min([padded[i : i + height] for i in range(width + 1)], axis=0)
    window_max = np.max([rows_max[:, j : j + width_px] for j in range(width + 1)], axis=0)
    window_min = np.min([rows_min[:, j : j + width_px] for j in range(width + 1)], axis=0)
    return window_max != window_min


# --------------------------------------------------------------------------------------------------- the scene
@dataclasses.dataclass
class SyntheticSample:
    """One rendered image with its ground truth.

    image: uint8 (H, W, 3) RGB before JPEG coding; label: uint8 (H, W) in {0..K, 255}; salient: bool (H, W),
    visible objects and distractors; part: bool (H, W), visible class-specific part pixels; classes: sorted
    image-level labels (1..K); num_distractors: distractors with at least the minimum visible area.
    """

    image: np.ndarray
    label: np.ndarray
    salient: np.ndarray
    part: np.ndarray
    classes: list[int]
    num_distractors: int


@dataclasses.dataclass
class _Item:
    """One painted layer, stored on its bounding box ``window`` = (row slice, column slice) of the image."""

    window: tuple[slice, slice]
    region: np.ndarray  # bool (h, w) inside the window
    colour: np.ndarray  # float (h, w, 3) in [0, 1]
    part: np.ndarray  # bool (h, w): class-specific part pixels
    class_index: int  # 0 for distractors


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """Textured low-chroma background: float RGB (H, W, 3) in [0, 1] and its mean CIE lightness."""
    base_lightness = rng.uniform(30.0, 82.0)
    hues = rng.uniform(0.0, 360.0, size=2)
    chromas = rng.uniform(4.0, 20.0, size=2)
    angle = rng.uniform(0.0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
    lightness = base_lightness + rng.uniform(-6.0, 6.0) * (ramp - 0.5) + 4.0 * smooth_noise(rng, height, width, 4)
    a = np.interp(ramp, [0, 1], chromas * np.cos(np.deg2rad(hues))) + 3.0 * smooth_noise(rng, height, width, 3)
    b = np.interp(ramp, [0, 1], chromas * np.sin(np.deg2rad(hues))) + 3.0 * smooth_noise(rng, height, width, 3)
    texture = rng.integers(3)
    if texture == 0:  # grain
        lightness = lightness + rng.uniform(2.0, 4.0) * rng.standard_normal((height, width))
    elif texture == 1:  # soft stripes
        period = rng.uniform(6.0, 14.0)
        theta = rng.uniform(0.0, math.pi)
        phase = (xs * math.cos(theta) + ys * math.sin(theta)) * (2 * math.pi / period)
        lightness = lightness + rng.uniform(3.0, 6.0) * np.sin(phase)
    else:  # blotches of another low-chroma colour
        blotch = np.clip((smooth_noise(rng, height, width, 6) - 0.3) * 2.0, 0.0, 1.0)
        blotch_hue = np.deg2rad(rng.uniform(0.0, 360.0))
        blotch_chroma = rng.uniform(6.0, 16.0)
        lightness = lightness + rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 9.0) * blotch
        a = a * (1 - blotch) + blotch_chroma * math.cos(blotch_hue) * blotch
        b = b * (1 - blotch) + blotch_chroma * math.sin(blotch_hue) * blotch
    chroma = np.hypot(a, b)
    hue = np.rad2deg(np.arctan2(b, a))
    return lch_to_rgb(np.clip(lightness, 5.0, 97.0), chroma, hue), float(base_lightness)


def _salient_lightness(rng: np.random.Generator, background_lightness: float) -> float:
    """A lightness 22..40 units away from the background's, on the side with more room."""
    offset = rng.uniform(22.0, 40.0)
    if background_lightness > 56.0:
        return max(background_lightness - offset, 15.0)
    return min(background_lightness + offset, 93.0)


def _local_frame(
    height: int, width: int, centre: tuple[float, float], angle: float, radius: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The image window that holds a disc of ``radius`` around ``centre`` (row, col), and its pixel coordinates
    rotated into the object frame: u along the major axis (direction ``angle``), v across it, both (h, w)."""
    top = max(0, int(math.floor(centre[0] - radius)))
    bottom = min(height, int(math.ceil(centre[0] + radius)) + 1)
    left = max(0, int(math.floor(centre[1] - radius)))
    right = min(width, int(math.ceil(centre[1] + radius)) + 1)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float64)
    dy = ys + 0.5 - centre[0]
    dx = xs + 0.5 - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    return (slice(top, bottom), slice(left, right)), dx * cos + dy * sin, -dx * sin + dy * cos


def _superellipse(u: np.ndarray, v: np.ndarray, semi_major: float, semi_minor: float, exponent: float) -> np.ndarray:
    """Bool (H, W): inside |u/a|^p + |v/b|^p <= 1 (p = 2 ellipse, larger p towards a rounded rectangle)."""
    return (np.abs(u / semi_major) ** exponent + np.abs(v / semi_minor) ** exponent) <= 1.0


def _superellipse_area(semi_major: float, semi_minor: float, exponent: float) -> float:
    return 4.0 * semi_major * semi_minor * math.gamma(1 + 1 / exponent) ** 2 / math.gamma(1 + 2 / exponent)


def _body_colour(rng: np.random.Generator, shape: tuple[int, int], background_lightness: float) -> np.ndarray:
    """The body appearance shared by every class (and body-like distractors): float RGB (h, w, 3) in [0, 1].

    Muted colour (chroma 15..32, any hue) whose lightness stands 22..40 units off the background's, mottled.
    """
    height, width = shape
    lightness = _salient_lightness(rng, background_lightness)
    chroma = rng.uniform(15.0, 32.0)
    hue = rng.uniform(0.0, 360.0)
    mottle = smooth_noise(rng, height, width, rng.uniform(3.0, 5.0))
    grain = rng.standard_normal((height, width))
    return lch_to_rgb(
        lightness + rng.uniform(3.0, 7.0) * mottle + 1.5 * grain,
        chroma * (1.0 + 0.12 * mottle),
        hue + rng.uniform(4.0, 10.0) * smooth_noise(rng, height, width, 2.5),
    )


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, period: float, angle: float) -> np.ndarray:
    """Bool (H, W): True where the class colour shows, False where the dark pattern colour shows."""
    if pattern == "stripes":
        s = u * math.cos(angle) + v * math.sin(angle)
        return np.floor(s / (period / 2)).astype(np.int64) % 2 == 0
    if pattern == "dots":
        cell_u = u / period - np.floor(u / period) - 0.5
        cell_v = v / period - np.floor(v / period) - 0.5
        return np.hypot(cell_u, cell_v) > 0.3
    if pattern == "checker":
        return (np.floor(u / (period / 2)) + np.floor(v / (period / 2))).astype(np.int64) % 2 == 0
    raise ValueError(f"unknown part pattern {pattern!r}")


def _object(
    rng: np.random.Generator,
    height: int,
    width: int,
    appearance: ClassAppearance,
    size_scale: float,
    part_fraction: float,
    background_lightness: float,
) -> _Item:
    """A class object: shared-appearance body + class-specific part at the +u end of the major axis."""
    short_side = min(height, width)
    semi_major = 0.5 * rng.uniform(0.34, 0.64) * short_side * size_scale
    semi_minor = semi_major * rng.uniform(0.5, 0.9)
    exponent = rng.uniform(2.0, 4.0)
    centre = (rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width)
    angle = rng.uniform(0.0, 2 * math.pi)
    with_head = rng.uniform() < 0.5
    if with_head:
        # "head": a disc centred near the end of the major axis, about half of it overlapping the body
        body_area = _superellipse_area(semi_major, semi_minor, exponent)
        head_radius = math.sqrt(part_fraction * body_area / (1.0 - part_fraction / 2.0) / math.pi)
        extent = max(math.hypot(semi_major, semi_minor), 0.85 * semi_major + head_radius)
    else:
        extent = math.hypot(semi_major, semi_minor)
    window, u, v = _local_frame(height, width, centre, angle, extent + 1.0)
    body = _superellipse(u, v, semi_major, semi_minor, exponent)
    if with_head:
        part = np.hypot(u - 0.85 * semi_major, v) <= head_radius
        region = body | part
    else:
        # "band": the end cap of the body beyond the (1 - part_fraction) area quantile of u
        grid_u, grid_v = np.meshgrid(np.linspace(-semi_major, semi_major, 129), np.linspace(-semi_minor, semi_minor, 129))
        inside = _superellipse(grid_u, grid_v, semi_major, semi_minor, exponent)
        threshold = float(np.quantile(grid_u[inside], 1.0 - part_fraction))
        region = body
        part = body & (u >= threshold)
    colour = _body_colour(rng, u.shape, background_lightness)
    class_rgb = np.clip(np.array(appearance.colour) * rng.uniform(0.88, 1.05) + rng.uniform(-0.04, 0.04, 3), 0, 1)
    dark_rgb = class_rgb * rng.uniform(0.12, 0.25)
    pattern = _pattern_mask(appearance.pattern, u, v, rng.uniform(6.0, 10.0), rng.uniform(0.0, math.pi))
    shade = 1.0 + 0.06 * smooth_noise(rng, u.shape[0], u.shape[1], 2.5)
    part_colour = np.where(pattern[..., None], class_rgb, dark_rgb) * shade[..., None]
    colour = np.where(part[..., None], part_colour, colour)
    return _Item(window, region, np.clip(colour, 0.0, 1.0), part & region, appearance.index)


def _distractor(
    rng: np.random.Generator, height: int, width: int, size_scale: float, background_lightness: float
) -> _Item:
    """A class-less salient blob: body-like appearance, or a plain vivid colour with soft shading."""
    short_side = min(height, width)
    semi_major = 0.5 * rng.uniform(0.34, 0.64) * short_side * size_scale
    semi_minor = semi_major * rng.uniform(0.5, 1.0)
    centre = (rng.uniform(0.12, 0.88) * height, rng.uniform(0.12, 0.88) * width)
    angle = rng.uniform(0.0, 2 * math.pi)
    window, u, v = _local_frame(height, width, centre, angle, math.hypot(semi_major, semi_minor) + 1.0)
    region = _superellipse(u, v, semi_major, semi_minor, rng.uniform(2.0, 4.0))
    if rng.uniform() < 0.6:
        colour = _body_colour(rng, u.shape, background_lightness)
    else:
        radial = np.clip(np.hypot(u / semi_major, v / semi_minor), 0.0, 1.0)
        colour = lch_to_rgb(
            _salient_lightness(rng, background_lightness) - 8.0 * radial + 2.0 * smooth_noise(rng, *u.shape, 3.0),
            rng.uniform(45.0, 70.0),
            rng.uniform(0.0, 360.0),
        )
    return _Item(window, region, colour, np.zeros_like(region), 0)


def _draw_classes(rng: np.random.Generator, num_classes: int, max_objects: int, cooccurrence_rate: float) -> list[int]:
    """Class of every object in painting order: 1..max_objects primary draws, each maybe followed by its partner."""
    classes: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        class_index = int(rng.integers(1, num_classes + 1))
        classes.append(class_index)
        partner = partner_class(class_index, num_classes)
        if partner is not None and rng.uniform() < cooccurrence_rate:
            classes.append(partner)
    return classes


def render_sample(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    num_classes: int,
    max_objects: int = 3,
    distractor_rate: float = 0.5,
    cooccurrence_rate: float = 0.6,
    part_fraction: float = 0.25,
    boundary_width: int = 1,
) -> SyntheticSample:
    """Render one image of size (height, width) and its ground truth from ``rng`` (arguments as in :func:`generate`)."""
    appearances = class_appearances(num_classes)
    min_visible = max(MIN_VISIBLE_PIXELS, math.ceil(MIN_VISIBLE_FRACTION * height * width))
    for _ in range(MAX_SCENE_ATTEMPTS):
        canvas, background_lightness = _background(rng, height, width)
        object_classes = _draw_classes(rng, num_classes, max_objects, cooccurrence_rate)
        num_distractors = int(rng.integers(1, 3)) if rng.uniform() < distractor_rate else 0
        num_items = len(object_classes) + num_distractors
        size_scale = 1.0 if num_items <= 2 else (2.0 / num_items) ** 0.35
        # distractors take random places in the painting order (objects keep their relative order)
        distractor_slots = {int(slot) for slot in rng.choice(num_items, size=num_distractors, replace=False)}
        items: list[_Item] = []
        object_iter = iter(object_classes)
        for position in range(num_items):
            if position in distractor_slots:
                items.append(_distractor(rng, height, width, size_scale, background_lightness))
            else:
                appearance = appearances[next(object_iter) - 1]
                items.append(_object(rng, height, width, appearance, size_scale, part_fraction, background_lightness))
        owner = np.full((height, width), -1, dtype=np.int64)
        part = np.zeros((height, width), dtype=bool)
        for index, item in enumerate(items):
            canvas[item.window][item.region] = item.colour[item.region]
            owner[item.window][item.region] = index
            part[item.window][item.region] = item.part[item.region]
        item_classes = np.array([item.class_index for item in items] + [0], dtype=np.int64)
        class_map = item_classes[owner]  # owner -1 picks the trailing 0
        counts = np.bincount(class_map.ravel(), minlength=num_classes + 1)
        present = [c for c in range(1, num_classes + 1) if counts[c] >= min_visible]
        if present:
            break
    else:
        raise RuntimeError(f"no visible class object after {MAX_SCENE_ATTEMPTS} attempts ({height}x{width} image)")

    label = class_map.astype(np.uint8)
    tiny = (class_map > 0) & ~np.isin(class_map, present)
    label[boundary_band(label, boundary_width) | tiny] = IGNORE_INDEX
    distractor_pixels = np.bincount(owner[owner >= 0], minlength=len(items))
    visible_distractors = sum(
        1 for index, item in enumerate(items) if item.class_index == 0 and distractor_pixels[index] >= min_visible
    )
    canvas = _blur(canvas, np.array([0.25, 0.5, 0.25]))
    canvas = canvas + rng.normal(0.0, 2.0 / 255.0, size=canvas.shape)
    image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    return SyntheticSample(
        image=image,
        label=label,
        salient=owner >= 0,
        part=part & (class_map > 0),
        classes=present,
        num_distractors=visible_distractors,
    )


# ---------------------------------------------------------------------------------------------------- generate
def _validate(arguments: dict) -> None:
    """Check types and the ranges declared on :class:`auxseg.config.SyntheticParams`; ValueError names the argument."""
    specs = SyntheticParams.__pydantic_fields__
    for name, value in arguments.items():
        expected = numbers.Real if isinstance(specs[name].default, float) else numbers.Integral
        if isinstance(value, bool) or not isinstance(value, expected):
            kind = "a number" if expected is numbers.Real else "an integer"
            raise ValueError(f"{name} must be {kind}, got {value!r}")
        if expected is numbers.Real and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        metadata = {bound: getattr(item, bound) for item in specs[name].metadata for bound in ("ge", "gt", "le", "lt")
                    if hasattr(item, bound)}
        for bound, holds, word in (
            ("ge", lambda x, b: x >= b, ">="),
            ("gt", lambda x, b: x > b, ">"),
            ("le", lambda x, b: x <= b, "<="),
            ("lt", lambda x, b: x < b, "<"),
        ):
            limit = metadata.get(bound)
            if limit is not None and not holds(value, limit):
                raise ValueError(f"{name} must be {word} {limit}, got {value!r}")
    if arguments["seed"] < 0:
        raise ValueError(f"seed must be >= 0, got {arguments['seed']}")
    if arguments["min_side"] > arguments["max_side"]:
        raise ValueError(f"min_side ({arguments['min_side']}) must not exceed max_side ({arguments['max_side']})")


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: a child of SeedSequence(seed), independent of all others."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_SPLIT_CODES[split], index)))


def image_id(split: str, index: int) -> str:
    return f"syn_{split}_{index:06d}"


def _write_sample(directory: Path, sample_id: str, sample: SyntheticSample) -> None:
    save_jpeg(directory / "JPEGImages" / f"{sample_id}.jpg", sample.image, quality=JPEG_QUALITY)
    save_label_png(directory / "SegmentationClass" / f"{sample_id}.png", sample.label)
    save_gray_png(directory / "SalientMask" / f"{sample_id}.png", sample.salient.astype(np.float32))


def _check_replaceable(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not all((root / marker).is_file() for marker in _DATASET_MARKERS):
        raise ValueError(
            f"root {root} is a non-empty directory that does not look like a generated dataset "
            f"(no {' / '.join(_DATASET_MARKERS)}); refusing to replace it"
        )


def generate(
    root: str | os.PathLike,
    *,
    n_train: int,
    n_val: int,
    num_classes: int,
    seed: int,
    min_side: int = 96,
    max_side: int = 160,
    max_objects: int = 3,
    distractor_rate: float = 0.5,
    cooccurrence_rate: float = 0.6,
    part_fraction: float = 0.25,
    boundary_width: int = 1,
) -> dict:
    """Write the synthetic dataset under ``root`` (replacing a previous one) and return its statistics.

    Everything is written into a temporary sibling directory that is renamed onto ``root`` at the end, so an
    interrupted run leaves the previous dataset (or nothing) in place. Same arguments ⇒ byte-identical files.
    """
    arguments = dict(
        n_train=n_train, n_val=n_val, num_classes=num_classes, seed=seed, min_side=min_side, max_side=max_side,
        max_objects=max_objects, distractor_rate=distractor_rate, cooccurrence_rate=cooccurrence_rate,
        part_fraction=part_fraction, boundary_width=boundary_width,
    )  # fmt: skip
    _validate(arguments)
    # plain Python numbers from here on (numpy scalars are accepted above)
    config = {name: int(value) if isinstance(value, numbers.Integral) else float(value) for name, value in arguments.items()}
    scene = {name: config[name] for name in _SCENE_ARGUMENTS}
    root = Path(os.path.abspath(root))
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    partial_prefix = f".{root.name}.partial-"
    for stale in root.parent.glob(f"{partial_prefix}*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=partial_prefix, dir=root.parent))
    try:
        labels: dict[str, list[int]] = {}
        for split in ("train", "val"):
            ids = []
            for index in range(config[f"n_{split}"]):
                rng = sample_rng(config["seed"], split, index)
                height = int(rng.integers(config["min_side"], config["max_side"] + 1))
                width = int(rng.integers(config["min_side"], config["max_side"] + 1))
                sample = render_sample(rng, height=height, width=width, **scene)
                sample_id = image_id(split, index)
                _write_sample(staging, sample_id, sample)
                labels[sample_id] = sample.classes
                ids.append(sample_id)
            with atomic_write(staging / "ImageSets" / "Segmentation" / f"{split}.txt", "w") as handle:
                handle.write("".join(f"{sample_id}\n" for sample_id in ids))
        save_json(staging / "image_labels.json", labels)
        save_json(staging / "class_names.json", class_names(config["num_classes"]))
        statistics = dataset_statistics(staging)
        save_json(staging / "stats.json", statistics)
        os.chmod(staging, 0o755)  # mkdtemp creates 0700
        if root.exists():
            retired = Path(tempfile.mkdtemp(prefix=partial_prefix, dir=root.parent))
            os.replace(root, retired / "old")
            try:
                os.replace(staging, root)
            except BaseException:
                os.replace(retired / "old", root)
                raise
            finally:
                shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return statistics


__all__ = [
    "ClassAppearance",
    "MIN_VISIBLE_FRACTION",
    "MIN_VISIBLE_PIXELS",
    "SyntheticSample",
    "boundary_band",
    "class_appearances",
    "class_names",
    "generate",
    "image_id",
    "partner_class",
    "render_sample",
    "sample_rng",
]
