"""Step ``samples``: one composite picture per sample train image, showing how the labels improve.

Each picture is one row: the image | its ground truth (only when the image has a mask) | the CAM seeds (background
threshold ``pseudo_labels.cam_threshold``, as round 0 uses) | the pseudo labels of r0, r1, … up to the final round |
the final DeepLab's prediction (``evaluate.scales`` / ``evaluate.flip``, no CRF). Label maps are drawn in the VOC
palette, with the column names above and a legend of the classes shown (names from the dataset) below. The images
are a fixed, evenly spaced subset of the train split (:func:`~auxseg.steps.common.select_sample_ids`), so the same
rows appear in every experiment and ``dvc plots diff`` puts them side by side. Written to
``<samples.out_dir>/<id>.png`` (deterministic bytes for the same labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from auxseg import IGNORE_INDEX
from auxseg.config import (
    CamParams,
    DatasetParams,
    DeepLabParams,
    EvaluateParams,
    PseudoLabelParams,
    RoundParams,
    RuntimeSection,
    SamplesParams,
    round_chain,
)
from auxseg.io import atomic_write, colorize_label, load_label_png
from auxseg.steps.common import model_normalization, open_split, select_sample_ids, staged_directory

GAP = 4
"""Pixels of white between cells, around the row and between the legend entries."""
FONT_SIZE = 12
"""Pixel size of Pillow's built-in font (``ImageFont.load_default``; nothing is downloaded)."""
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def class_name(value: int, class_names: Sequence[str]) -> str:
    """Legend name of label ``value``: the dataset's class name, ``unlabelled`` for 255."""
    if value == IGNORE_INDEX:
        return "unlabelled"
    if 0 <= value < len(class_names):
        return str(class_names[value])
    raise ValueError(f"label value {value} is outside the {len(class_names)} classes ({', '.join(class_names)}) and 255")


def compose_row(
    image: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    *,
    title: str = "image",
    cell_height: int = 128,
) -> Image.Image:
    """One composite row: ``image`` then every label map of ``columns``, with headers and a legend.

    image: uint8 RGB (H, W, 3). columns: (header, label map uint8/int (H, W) with values 0..K and 255) in order.
    class_names: K+1 names, background first (mask value c is ``class_names[c]``). Every cell is scaled to
    ``cell_height`` pixels (bilinear for the image, nearest for label maps); the legend lists the classes that occur
    in any label map (plus ``unlabelled`` for 255) with their palette colour. Returns an RGB PIL image whose bytes
    depend only on the inputs. A label map of another size, or a value that is neither a class nor 255, is a
    ValueError naming its column.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    cell_width = max(1, round(width * cell_height / height))
    cells = [(title, Image.fromarray(image.astype(np.uint8), mode="RGB").resize((cell_width, cell_height), Image.Resampling.BILINEAR))]
    present: set[int] = set()
    for header, label in columns:
        label = np.asarray(label)
        if label.shape != (height, width):
            raise ValueError(f"column '{header}': label map {label.shape} does not match the image ({height}, {width})")
        values = set(np.unique(label).tolist())
        for value in values:
            try:
                class_name(int(value), class_names)
            except ValueError as error:
                raise ValueError(f"column '{header}': {error}") from None
        present |= values
        coloured = Image.fromarray(colorize_label(label.astype(np.uint8)), mode="RGB")
        cells.append((header, coloured.resize((cell_width, cell_height), Image.Resampling.NEAREST)))

    font = _font()
    line_height = FONT_SIZE + GAP
    column_width = max([cell_width] + [_text_width(font, header) for header, _ in cells])
    row_width = GAP + len(cells) * (column_width + GAP)

    palette = colorize_label(np.array(sorted(present), dtype=np.uint8)).reshape(-1, 3)
    entries = [(class_name(int(v), class_names), tuple(int(c) for c in colour)) for v, colour in zip(sorted(present), palette)]
    legend_lines: list[list[tuple[int, str, tuple[int, int, int]]]] = [[]]
    x = GAP
    for name, colour in entries:
        entry_width = FONT_SIZE + GAP // 2 + _text_width(font, name) + 3 * GAP
        if legend_lines[-1] and x + entry_width > row_width:
            legend_lines.append([])
            x = GAP
        legend_lines[-1].append((x, name, colour))
        x += entry_width

    total_height = GAP + line_height + cell_height + GAP + len(legend_lines) * line_height + GAP
    canvas = Image.new("RGB", (row_width, total_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = GAP + line_height
    for index, (header, cell) in enumerate(cells):
        left = GAP + index * (column_width + GAP)
        draw.text((left + (column_width - _text_width(font, header)) // 2, GAP), header, fill=TEXT, font=font)
        canvas.paste(cell, (left + (column_width - cell_width) // 2, top))
    y = top + cell_height + GAP
    for line in legend_lines:
        for x, name, colour in line:
            draw.rectangle((x, y + 1, x + FONT_SIZE - 1, y + FONT_SIZE), fill=colour, outline=TEXT)
            draw.text((x + FONT_SIZE + GAP // 2, y), name, fill=TEXT, font=font)
        y += line_height
    return canvas


def _has_mask(split, image_id: str) -> bool:
    return image_id in split.mask_ids


def run(dataset: DatasetParams, cams: CamParams, pseudo_labels: PseudoLabelParams, rounds: dict[str, RoundParams],
        final_round: str, deeplab: DeepLabParams, evaluate: EvaluateParams, runtime: RuntimeSection,
        samples: SamplesParams) -> list[str]:
    """Write ``<samples.out_dir>/<id>.png`` for the sample train images; returns their ids.

    Reads the CAMs (``cams.out_dir``), every round's labels (``pseudo_labels.out_root/rK/seg``) along the chain
    ending at ``final_round``, and the final DeepLab (``deeplab.model_out``). A missing file is a DataError /
    FileNotFoundError naming it; nothing is written then.
    """
    from auxseg.cam import cam_seed_labels, load_cams
    from auxseg.engine import resolve_device
    from auxseg.steps.evaluate import multiscale_probs_fn
    from auxseg.steps.train_deeplab import load_deeplab

    split = open_split(dataset, "train")
    chain = round_chain(rounds, final_round)
    device = resolve_device(runtime)
    model, meta = load_deeplab(deeplab.model_out)
    model.to(device)
    probs_fn = multiscale_probs_fn(model, evaluate.scales, evaluate.flip, device,
                                   model_normalization(meta, deeplab.model_out))
    ids = select_sample_ids(split.ids, samples.num_images)
    with staged_directory(samples.out_dir) as staging:
        for image_id in ids:
            rgb = split.load_image(image_id)
            columns = []
            if _has_mask(split, image_id):
                columns.append(("ground truth", split.load_mask(image_id)))
            maps, labels = load_cams(Path(cams.out_dir) / f"{image_id}.npz")
            columns.append(("CAM seeds", cam_seed_labels(maps, labels, pseudo_labels.cam_threshold)))
            for name in chain:
                columns.append((name, load_label_png(Path(pseudo_labels.out_root) / name / "seg" / f"{image_id}.png")))
            with torch.inference_mode():
                # float16 probabilities, as evaluate's labels (auxseg.inference.label_task) are taken from
                prediction = probs_fn(rgb).float().cpu().numpy().astype(np.float16).argmax(0)
            columns.append(("DeepLab", prediction))
            picture = compose_row(rgb, columns, split.class_names, title=image_id, cell_height=samples.cell_height)
            with atomic_write(staging / f"{image_id}.png") as handle:
                picture.save(handle, format="PNG")
    print(f"samples: {len(ids)} composite rows (image | ground truth where a mask exists | CAM seeds | "
          f"{' | '.join(chain)} | DeepLab) in {samples.out_dir}")
    return ids
