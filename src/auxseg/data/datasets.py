"""Real and synthetic datasets in the Pascal VOC layout, loaded and validated.

Layout under ``root`` (VOC 2012, VOC + SBD, COCO 2014 converted to VOC style, and the embedded synthetic set)::

    JPEGImages/<id>.jpg
    SegmentationClassAug/<id>.png or SegmentationClass/<id>.png    palette or 'L' PNGs, values 0..K and 255
    ImageSets/Segmentation/<split>.txt                              one id per line, or SBD's lines
                                                     "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
    image_labels.json, class_names.json                             synthetic set (image_labels.json optional elsewhere)

``custom`` datasets use the same layout with their own class names (``dataset.class_names``, or a JSON list in
``class_names.json`` / ``dataset.class_names_file``) and image-level labels (JSON or CSV, see
:func:`read_image_labels`); their masks are optional per image (:attr:`DatasetSplit.mask_ids` are the scored ones).

:func:`load_split` selects the dataset from the ``dataset`` params section and returns a :class:`DatasetSplit`;
:func:`validate_split` decodes every image and mask and raises :class:`auxseg.io.DataError` (message starting with
the offending path) at the first bad id in list order. Nothing here writes except :func:`write_image_labels`.
"""

from __future__ import annotations

import concurrent.futures
import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from auxseg import IGNORE_INDEX
from auxseg.class_names import check_class_names, normalise_name
from auxseg.config import DatasetParams
from auxseg.io import DataError, image_size, load_image_rgb, load_json, load_label_png, read_text_file, save_json

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""Pascal VOC 2012: background + 20 classes in the standard order (mask value = position)."""

COCO_CLASSES: tuple[str, ...] = (
    "background",
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
"""COCO 2014 in VOC style: background + the 80 categories in ascending COCO category-id order (ids 1..90 made
contiguous 1..80), the mask values of the usual WSSS conversion."""

IMAGE_DIR = "JPEGImages"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
LIST_DIR = ("ImageSets", "Segmentation")
DEFAULT_MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")
DEFAULT_LABEL_FILE = "image_labels.json"
CLASS_NAMES_FILE = "class_names.json"

_FORBIDDEN_ID_CHARS = ("/", "\\", "\0")


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """One split of a VOC-layout dataset: its ids, class names, image-level labels and file locations."""

    root: Path
    name: str
    split: str
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    """K+1 names, ``"background"`` first; mask value c is ``class_names[c]``."""
    image_labels: dict[str, np.ndarray]
    """id → float32 (K,) multi-hot over the foreground classes (entry c-1 for class c)."""
    image_dir: Path
    mask_dir: Path | None
    """Folder of the ground-truth masks, ``None`` when the dataset has none."""
    masks_optional: bool = False
    """True for ``custom`` datasets: an id without ``mask_dir/<id>.png`` simply has no ground truth."""

    @property
    def num_classes(self) -> int:
        """K+1: foreground classes plus background."""
        return len(self.class_names)

    @property
    def list_path(self) -> Path:
        """The id list file of this split."""
        return self.root.joinpath(*LIST_DIR, f"{self.split}.txt")

    def image_path(self, image_id: str) -> Path:
        """``image_dir/<id>.jpg`` (the id is checked not to leave the folder)."""
        _check_id(image_id, f"{self.image_dir}")
        return self.image_dir / f"{image_id}{IMAGE_SUFFIX}"

    def mask_path(self, image_id: str) -> Path:
        """``mask_dir/<id>.png``; DataError if the dataset has no mask folder."""
        if self.mask_dir is None:
            raise DataError(
                f"{self.root}: dataset '{self.name}' has no ground-truth masks for split '{self.split}' "
                f"(none of {', '.join(DEFAULT_MASK_DIRS)} exists)"
            )
        _check_id(image_id, f"{self.mask_dir}")
        return self.mask_dir / f"{image_id}{MASK_SUFFIX}"

    def has_mask(self, image_id: str) -> bool:
        """Whether ``image_id`` has a ground-truth mask (always, when the dataset has masks and they are required)."""
        if self.mask_dir is None:
            return False
        return not self.masks_optional or self.mask_path(image_id).is_file()

    @property
    def mask_ids(self) -> tuple[str, ...]:
        """The ids that have a ground-truth mask, in list order (all of them, or none, except on custom datasets)."""
        return tuple(image_id for image_id in self.ids if self.has_mask(image_id))

    def load_image(self, image_id: str) -> np.ndarray:
        """uint8 RGB (H, W, 3); grey, RGBA, palette and CMYK images are converted."""
        return load_image_rgb(self.image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        """uint8 (H, W) with values 0..K and 255, checked against the class count and the image size."""
        mask_path = self.mask_path(image_id)
        mask = load_label_png(mask_path)
        message = _mask_value_error(mask_path, _value_counts(mask), self.num_classes)
        if message is not None:
            raise DataError(message)
        image_path = self.image_path(image_id)
        message = _size_error(mask_path, mask.shape, image_path, image_size(image_path))
        if message is not None:
            raise DataError(message)
        return mask


# ----------------------------------------------------------------------------------------------------------------
# Ids and list files


def _check_id(image_id: Any, where: str) -> str:
    """Reject ids that are empty or could leave the dataset folders (separators, '..', NUL, absolute)."""
    if not isinstance(image_id, str) or not image_id.strip():
        raise DataError(f"{where}: invalid empty id {image_id!r}")
    if image_id != image_id.strip() or any(char in image_id for char in _FORBIDDEN_ID_CHARS):
        raise DataError(
            f"{where}: id {image_id!r} contains a path separator or whitespace; ids must be plain file stems"
        )
    if ".." in image_id or image_id == ".":
        raise DataError(f"{where}: id {image_id!r} contains '..' and could leave the dataset root")
    return image_id


def _id_from_token(token: str, where: str) -> str:
    """Id of the first token of a list line: ``<id>`` or SBD's ``/JPEGImages/<id>.jpg``."""
    if "/" in token and "\\" not in token:
        path = PurePosixPath(token)
        parts = [part for part in path.parts if part != "/"]
        if len(parts) == 2 and parts[0] == IMAGE_DIR and path.suffix.lower() in (".jpg", ".jpeg"):
            return _check_id(path.stem, where)
        raise DataError(
            f"{where}: entry {token!r} is neither a plain id nor '/{IMAGE_DIR}/<id>.jpg'; "
            "ids must not contain path separators or leave the dataset root"
        )
    return _check_id(token, where)


def read_id_list(path: str | Path) -> tuple[str, ...]:
    """Ids of a split list, in file order. Lines are ``<id>`` or ``/JPEGImages/<id>.jpg [...]``; blank lines skipped.

    DataError (message starting with ``path``) on a missing file, text that is not UTF-8 (a UTF-8 byte-order mark
    is accepted), a duplicate id, an unsafe id or an empty list.
    """
    path = Path(path)
    text = read_text_file(path, "split list")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        image_id = _id_from_token(tokens[0], f"{path}: line {line_number}")
        if image_id in first_line:
            raise DataError(
                f"{path}: line {line_number}: duplicate id '{image_id}' (first listed on line {first_line[image_id]})"
            )
        first_line[image_id] = line_number
        ids.append(image_id)
    if not ids:
        raise DataError(f"{path}: split list holds no ids")
    return tuple(ids)


# ----------------------------------------------------------------------------------------------------------------
# Image-level label files


def _name_lookup(class_names: Sequence[str]) -> dict[str, int]:
    return {normalise_name(name): index for index, name in enumerate(class_names) if index > 0}


def _class_index(item: Any, lookup: Mapping[str, int], num_foreground: int, where: str) -> int:
    """Class index 1..K of one label entry: an integer index or a class name."""
    if isinstance(item, bool):
        raise DataError(f"{where}: label {item!r} is neither a class index nor a class name")
    if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
        index = int(item)
        if not 1 <= index <= num_foreground:
            raise DataError(f"{where}: class index {index} is outside 1..{num_foreground} (0 is background)")
        return index
    if isinstance(item, str):
        key = normalise_name(item)
        if key not in lookup:
            raise DataError(f"{where}: unknown class name {item!r}")
        return lookup[key]
    raise DataError(f"{where}: label {item!r} is neither a class index nor a class name")


def _split_label_tokens(text: str, lookup: Mapping[str, int], where: str) -> list[str]:
    """Space-separated labels of a CSV cell; multi-word names ('traffic light') are matched longest first."""
    tokens = text.split()
    labels: list[str] = []
    start = 0
    while start < len(tokens):
        if tokens[start].isdigit():
            labels.append(tokens[start])
            start += 1
            continue
        for stop in range(len(tokens), start, -1):
            candidate = " ".join(tokens[start:stop])
            if normalise_name(candidate) in lookup:
                labels.append(candidate)
                start = stop
                break
        else:
            raise DataError(f"{where}: unknown class name {tokens[start]!r}")
    return labels


def _multi_hot(indices: Iterable[int], num_foreground: int) -> np.ndarray:
    vector = np.zeros(num_foreground, dtype=np.float32)
    for index in indices:
        vector[index - 1] = 1.0
    return vector


def read_image_labels(path: str | Path, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Image-level labels: id → float32 (K,) multi-hot over foreground classes (K = len(class_names) - 1).

    Formats (by suffix): ``.json`` {id: [class index 1..K or class name, ...]}; ``.csv`` with header ``id,labels``
    where labels are space-separated indices or names (names match case-insensitively, '_' = ' ').
    UTF-8 text (a byte-order mark is accepted). DataError naming the file on a missing file, other encodings,
    invalid JSON/CSV, a duplicate id (JSON key or CSV row) or an unknown class.
    """
    path = Path(path)
    num_foreground = len(class_names) - 1
    lookup = _name_lookup(class_names)
    suffix = path.suffix.lower()
    labels: dict[str, np.ndarray] = {}
    if suffix == ".json":
        try:
            data = load_json(path, "image-level label file")
        except DataError as error:
            if "duplicate key" in str(error):
                raise DataError(str(error).replace("duplicate key", "duplicate id", 1)) from None
            raise
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object {{id: [labels]}}, got {type(data).__name__}")
        for image_id, entries in data.items():
            where = f"{path}: id '{image_id}'"
            if not isinstance(entries, list):
                raise DataError(f"{where}: expected a list of class indices or names, got {entries!r}")
            labels[image_id] = _multi_hot(
                (_class_index(entry, lookup, num_foreground, where) for entry in entries), num_foreground
            )
    elif suffix == ".csv":
        text = read_text_file(path, "image-level label file")
        rows = list(csv.reader(text.splitlines()))
        if not rows or [cell.strip().lower() for cell in rows[0]] != ["id", "labels"]:
            header = rows[0] if rows else []
            raise DataError(f"{path}: expected the CSV header 'id,labels', got {','.join(header)!r}")
        for row_number, row in enumerate(rows[1:], start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise DataError(f"{path}: line {row_number}: expected 2 columns (id,labels), got {len(row)}")
            image_id = row[0].strip()
            where = f"{path}: line {row_number}: id '{image_id}'"
            if not image_id:
                raise DataError(f"{path}: line {row_number}: empty id")
            if image_id in labels:
                raise DataError(f"{where}: duplicate id")
            entries = _split_label_tokens(row[1], lookup, where)
            labels[image_id] = _multi_hot(
                (_class_index(entry, lookup, num_foreground, where) for entry in entries), num_foreground
            )
    else:
        raise DataError(f"{path}: unsupported label file type {suffix!r} (expected .json or .csv)")
    return labels


def write_image_labels(path: str | Path, labels: Mapping[str, np.ndarray]) -> None:
    """Write id → (K,) multi-hot as JSON {id: [class indices 1..K]} with sorted keys, atomically."""
    data: dict[str, list[int]] = {}
    length: int | None = None
    for image_id, vector in labels.items():
        vector = np.asarray(vector)
        if vector.ndim != 1:
            raise ValueError(f"labels['{image_id}']: expected a 1-D multi-hot vector, got shape {vector.shape}")
        if length is not None and vector.shape[0] != length:
            raise ValueError(f"labels['{image_id}']: length {vector.shape[0]} differs from the others ({length})")
        length = vector.shape[0]
        if not np.all((vector == 0) | (vector == 1)):
            raise ValueError(f"labels['{image_id}']: multi-hot values must be 0 or 1")
        data[str(image_id)] = [int(index) + 1 for index in np.flatnonzero(vector)]
    save_json(path, data)


# ----------------------------------------------------------------------------------------------------------------
# Per-file checks (run in worker threads; they return messages instead of raising so that the error reported is
# the one of the first bad id in list order, whatever the scheduling)


def _value_counts(mask: np.ndarray) -> np.ndarray:
    """(256,) int64 pixel counts per value of a uint8 mask."""
    return np.bincount(mask.reshape(-1), minlength=256)


def _mask_value_error(mask_path: Path | str, counts: np.ndarray, num_classes: int) -> str | None:
    invalid = np.flatnonzero(counts[num_classes:IGNORE_INDEX]) + num_classes
    if invalid.size == 0:
        return None
    shown = ", ".join(str(int(value)) for value in invalid[:10]) + (", ..." if invalid.size > 10 else "")
    return f"{mask_path}: mask values {shown} are outside 0..{num_classes - 1} and {IGNORE_INDEX}"


def _size_error(
    mask_path: Path | str, mask_shape: tuple[int, ...], image_path: Path | str, image_shape: tuple[int, ...]
) -> str | None:
    if tuple(mask_shape[:2]) == tuple(image_shape[:2]):
        return None
    return (
        f"{mask_path}: mask size {mask_shape[0]}x{mask_shape[1]} (HxW) differs from "
        f"image {image_path} size {image_shape[0]}x{image_shape[1]}"
    )


@dataclass(frozen=True)
class _ItemCheck:
    """What to check for one id."""

    image_path: str
    mask_path: str | None
    num_classes: int
    decode_image: bool
    compare_sizes: bool


def _inspect_item(check: _ItemCheck) -> tuple[str | None, np.ndarray | None]:
    """Check one image/mask pair → (error message or None, present foreground classes float32 (K,) or None)."""
    if check.decode_image and not Path(check.image_path).is_file():
        return f"{check.image_path}: image not found", None
    try:
        image_shape: tuple[int, ...] | None = None
        if check.decode_image:
            image_shape = load_image_rgb(check.image_path).shape
        if check.mask_path is None:
            return None, None
        if not Path(check.mask_path).is_file():
            return f"{check.mask_path}: mask not found", None
        mask = load_label_png(check.mask_path)
        counts = _value_counts(mask)
        message = _mask_value_error(check.mask_path, counts, check.num_classes)
        if message is None and check.compare_sizes:
            if image_shape is None:
                image_shape = image_size(check.image_path)
            message = _size_error(check.mask_path, mask.shape, check.image_path, image_shape)
        if message is not None:
            return message, None
        return None, (counts[1 : check.num_classes] > 0).astype(np.float32)
    except DataError as error:
        return str(error), None


def _run_checks(
    checks: Sequence[_ItemCheck], ids: Sequence[str], list_path: Path, workers: int
) -> list[np.ndarray | None]:
    """Run the checks in list order (``workers`` threads); raise at the first failing id in list order."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    results: list[np.ndarray | None] = []

    def fail(message: str, image_id: str) -> DataError:
        return DataError(f"{message} (id '{image_id}' listed in {list_path})")

    if workers == 1 or len(checks) < 2:
        for check, image_id in zip(checks, ids):
            message, present = _inspect_item(check)
            if message is not None:
                raise fail(message, image_id)
            results.append(present)
        return results
    # Threads, not processes: Pillow releases the GIL while decoding, so threads scale like a process pool here
    # (measured), without pickling, without spawn re-importing __main__ (which breaks under `python -` and
    # notebooks) and without forking a parent that may hold torch threads.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(checks)))
    try:
        for (message, present), image_id in zip(executor.map(_inspect_item, checks), ids):
            if message is not None:
                raise fail(message, image_id)
            results.append(present)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Loading and validating a split


def _read_class_names(path: Path, key: str | None = None) -> tuple[str, ...]:
    """Class names from a JSON list file (``root/class_names.json`` or ``dataset.class_names_file``)."""
    if not path.is_file():
        hint = f" ({key})" if key else ""
        raise DataError(f"{path}: class-name file not found{hint}")
    return check_class_names(load_json(path, "class-name file"), str(path))


def _class_names_for(params: DatasetParams, root: Path) -> tuple[str, ...]:
    if params.name == "voc2012":
        return VOC_CLASSES
    if params.name == "coco2014":
        return COCO_CLASSES
    if params.name == "synthetic":
        return _read_class_names(root / CLASS_NAMES_FILE)
    if params.name == "custom":
        if params.class_names is not None:
            return check_class_names(params.class_names, "dataset.class_names")
        if params.class_names_file is not None:
            return _read_class_names(root / params.class_names_file, "dataset.class_names_file")
        path = root / CLASS_NAMES_FILE
        if not path.is_file():
            raise DataError(
                f"{path}: dataset 'custom' needs its class names: set dataset.class_names in params, "
                f"or write {CLASS_NAMES_FILE} (a JSON list, 'background' first) or set dataset.class_names_file"
            )
        return _read_class_names(path)
    raise ValueError(
        f"dataset.name: unknown dataset {params.name!r} (expected synthetic, voc2012, coco2014 or custom)"
    )


def _resolve_mask_dir(params: DatasetParams, root: Path) -> Path | None:
    if params.mask_dir is not None:
        mask_dir = root / params.mask_dir
        if not mask_dir.is_dir():
            raise DataError(f"{mask_dir}: mask folder (dataset.mask_dir) not found")
        return mask_dir
    for candidate in DEFAULT_MASK_DIRS:
        if (root / candidate).is_dir():
            return root / candidate
    return None


def load_split(
    params: DatasetParams, split: str, *, validate: bool = True, check_masks: bool = True, workers: int = 1
) -> DatasetSplit:
    """Load split ``split`` (a list name under ImageSets/Segmentation) of the dataset described by ``params``.

    Image-level labels come from ``params.image_labels``, else ``root/image_labels.json``, else the masks. With
    ``validate`` every image (and, with ``check_masks``, every mask) is fully decoded and checked; masks are also
    read, with value checks, whenever labels are derived from them. Raises DataError naming the first bad file.
    """
    root = Path(params.root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (dataset.root)")
    if not isinstance(split, str) or not split or any(char in split for char in _FORBIDDEN_ID_CHARS) or ".." in split:
        raise DataError(f"{root}: invalid split name {split!r}")
    class_names = _class_names_for(params, root)
    list_path = root.joinpath(*LIST_DIR, f"{split}.txt")
    ids = read_id_list(list_path)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    mask_dir = _resolve_mask_dir(params, root)

    label_path = root / params.image_labels if params.image_labels is not None else root / DEFAULT_LABEL_FILE
    labels_from_file = params.image_labels is not None or label_path.is_file()
    image_labels: dict[str, np.ndarray] = {}
    if labels_from_file:
        all_labels = read_image_labels(label_path, class_names)
        for image_id in ids:
            if image_id not in all_labels:
                raise DataError(f"{label_path}: no image-level labels for id '{image_id}' of split '{split}'")
            image_labels[image_id] = all_labels[image_id]
    elif mask_dir is None:
        raise DataError(
            f"{root}: split '{split}' has no image-level labels: no label file "
            f"({label_path.name}, dataset.image_labels) and no mask folder ({', '.join(DEFAULT_MASK_DIRS)}) "
            "to derive them from"
        )

    dataset = DatasetSplit(
        root=root,
        name=params.name,
        split=split,
        ids=ids,
        class_names=class_names,
        image_labels=image_labels,
        image_dir=image_dir,
        mask_dir=mask_dir,
        masks_optional=params.name == "custom",
    )
    derive = not labels_from_file
    if derive and dataset.masks_optional:
        missing = next((image_id for image_id in ids if not dataset.has_mask(image_id)), None)
        if missing is not None:
            raise DataError(
                f"{label_path}: image-level label file not found, and id '{missing}' of split '{split}' has no mask "
                "to derive its labels from (give a JSON or CSV label file, dataset.image_labels)"
            )
    if validate or derive:
        present = _check_files(
            dataset, decode_images=validate, check_masks=check_masks, read_masks=derive, workers=workers
        )
        if derive:
            for image_id, vector in zip(ids, present):
                assert vector is not None
                image_labels[image_id] = vector
    return dataset


def _check_files(
    ds: DatasetSplit, *, decode_images: bool, check_masks: bool, read_masks: bool, workers: int
) -> list[np.ndarray | None]:
    compare = decode_images and check_masks and ds.mask_dir is not None
    use_masks = compare or read_masks
    checks = [
        _ItemCheck(
            image_path=str(ds.image_path(image_id)),
            # an optional mask that is absent is skipped, unless the labels must come from it
            mask_path=str(ds.mask_path(image_id)) if use_masks and (read_masks or ds.has_mask(image_id)) else None,
            num_classes=ds.num_classes,
            decode_image=decode_images,
            compare_sizes=compare,
        )
        for image_id in ds.ids
    ]
    return _run_checks(checks, ds.ids, ds.list_path, workers)


def validate_split(ds: DatasetSplit, *, check_masks: bool = True, workers: int = 1) -> None:
    """Full check of a split: ids, labels, every image decoded, every mask (if any and ``check_masks``) decoded
    and compared with its image (size, values 0..K and 255). Raises DataError at the first bad id in list order."""
    if not ds.root.is_dir():
        raise DataError(f"{ds.root}: dataset root not found")
    seen: set[str] = set()
    for image_id in ds.ids:
        _check_id(image_id, f"{ds.list_path}")
        if image_id in seen:
            raise DataError(f"{ds.list_path}: duplicate id '{image_id}'")
        seen.add(image_id)
    num_foreground = ds.num_classes - 1
    for image_id in ds.ids:
        vector = ds.image_labels.get(image_id)
        if vector is None:
            raise DataError(f"{ds.root}: no image-level labels for id '{image_id}' of split '{ds.split}'")
        vector = np.asarray(vector)
        if vector.shape != (num_foreground,) or not np.all((vector == 0) | (vector == 1)):
            raise DataError(
                f"{ds.root}: image-level labels of id '{image_id}' must be a 0/1 vector of length {num_foreground}"
            )
    _check_files(ds, decode_images=True, check_masks=check_masks, read_masks=False, workers=workers)


__all__ = [
    "COCO_CLASSES",
    "check_class_names",
    "DatasetSplit",
    "VOC_CLASSES",
    "load_split",
    "read_id_list",
    "read_image_labels",
    "validate_split",
    "write_image_labels",
]
