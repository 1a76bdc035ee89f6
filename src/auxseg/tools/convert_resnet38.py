"""Convert the MXNet ResNet-38 A1 ImageNet weights into an ``auxseg`` resnet38 state_dict, without mxnet.

Usage::

    python -m auxseg.tools.convert_resnet38 ilsvrc-cls_rna-a1_cls1000_ep-0001.params resnet38_a1.pth

An MXNet ``.params`` file is a little-endian NDArray list:

- uint64 magic 0x112, uint64 reserved, uint64 array count;
- per array: a uint32 magic (0xF993FAC9 "V2": int32 storage type, shape; 0xF993FACA "V3": the same
  with NumPy shape semantics; 0xF993FAC8 "V1": shape; anything else is the legacy format where
  this word is ndim followed by uint32 dims). V1/V2/V3 shapes are uint32/int32 ndim plus int64
  dims. Then int32 device type, int32 device id, int32 dtype flag and the raw C-order data;
- uint64 name count, then per name a uint64 length and UTF-8 bytes (``arg:...`` / ``aux:...``).

Names map onto PSA's ``resnet38d`` names: ``conv1a_weight`` -> ``conv1a.weight``;
``res{S}{a|bK}_branch{X}_weight`` -> ``b{S}[_K].conv_branch{X}.weight``;
``bn{S}{a|bK}_branch{X}_{gamma|beta|moving_mean|moving_var}`` ->
``b{S}[_K].bn_branch{X}.{weight|bias|running_mean|running_var}``;
``bn7_*`` -> ``bn7.*``; the ImageNet classifier ``linear1000_*`` is dropped. The result must match
:class:`auxseg.models.resnet38.ResNet38` exactly (names and shapes), else the conversion fails.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
from collections.abc import Mapping
from typing import BinaryIO, Sequence

import numpy as np
import torch
from torch import Tensor

from auxseg.io import DataError, atomic_write
from auxseg.models.resnet38 import ResNet38
from auxseg.models.weights import file_sha256

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA
DEFAULT_STORAGE = 0
DTYPE_FLAGS: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
}
_BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_BLOCK_PATTERN = re.compile(r"^(res|bn)(\d)(a|b\d+)_(branch\w+?)_(weight|gamma|beta|moving_mean|moving_var)$")
_BN7_PATTERN = re.compile(r"^bn7_(gamma|beta|moving_mean|moving_var)$")
_DROPPED_PATTERN = re.compile(r"^linear1000_(weight|bias)$")


class _Reader:
    """Bounds-checked little-endian reads from a binary stream; errors name the file."""

    def __init__(self, handle: BinaryIO, path: str) -> None:
        self.handle = handle
        self.path = path

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise DataError(f"{self.path}: truncated MXNet .params file (wanted {size} bytes, got {len(data)})")
        return data

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))


def _read_shape(reader: _Reader, magic: int) -> tuple[int, ...] | None:
    """Shape of one array (None for an empty/unknown-shape array)."""
    if magic in (NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (ndim,) = reader.unpack("i")
        if ndim < 0:
            return None
        dims = reader.unpack(f"{ndim}q") if ndim else ()
        if magic != NDARRAY_V3_MAGIC and ndim == 0:
            return None
    else:
        ndim = magic
        if ndim > 32:
            raise DataError(f"{reader.path}: not an MXNet NDArray (unknown magic 0x{magic:08X})")
        if ndim == 0:
            return None
        dims = reader.unpack(f"{ndim}I")
    if any(d < 0 for d in dims):
        raise DataError(f"{reader.path}: negative dimension in shape {dims}")
    return tuple(int(d) for d in dims)


def _read_ndarray(reader: _Reader) -> np.ndarray:
    (magic,) = reader.unpack("I")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (storage_type,) = reader.unpack("i")
        if storage_type != DEFAULT_STORAGE:
            raise DataError(f"{reader.path}: sparse NDArray (storage type {storage_type}) is not supported")
    shape = _read_shape(reader, magic)
    if shape is None:
        return np.zeros((0,), dtype=np.float32)
    _device_type, _device_id, dtype_flag = reader.unpack("iii")
    if dtype_flag not in DTYPE_FLAGS:
        raise DataError(f"{reader.path}: unknown NDArray dtype flag {dtype_flag}")
    dtype = DTYPE_FLAGS[dtype_flag]
    count = int(np.prod(shape, dtype=np.int64))
    data = reader.read(count * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def read_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an MXNet NDArray-list file into {name: array}; names keep their ``arg:``/``aux:`` prefix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: MXNet .params file not found")
    with open(path, "rb") as handle:
        reader = _Reader(handle, path)
        magic, _reserved = reader.unpack("QQ")
        if magic != LIST_MAGIC:
            raise DataError(f"{path}: not an MXNet NDArray list (magic 0x{magic:X}, expected 0x{LIST_MAGIC:X})")
        (count,) = reader.unpack("Q")
        arrays = [_read_ndarray(reader) for _ in range(count)]
        (name_count,) = reader.unpack("Q")
        if name_count != count:
            raise DataError(f"{path}: {count} arrays but {name_count} names")
        names = []
        for _ in range(name_count):
            (length,) = reader.unpack("Q")
            names.append(reader.read(length).decode("utf-8"))
        if handle.read(1):
            raise DataError(f"{path}: trailing bytes after the name list")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate array names")
    return dict(zip(names, arrays))


def mxnet_name_to_torch(name: str) -> str | None:
    """Our resnet38 key for an MXNet A1 name (``arg:``/``aux:`` prefix optional); None = dropped classifier.

    Raises ValueError for a name outside the A1 naming scheme.
    """
    bare = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
    if bare == "conv1a_weight":
        return "conv1a.weight"
    if _DROPPED_PATTERN.match(bare):
        return None
    match = _BN7_PATTERN.match(bare)
    if match:
        return f"bn7.{_BN_FIELDS[match.group(1)]}"
    match = _BLOCK_PATTERN.match(bare)
    if match is None:
        raise ValueError(f"unrecognised MXNet ResNet-38 parameter name {name!r}")
    kind, stage, position, branch, field = match.groups()
    block = f"b{stage}" if position == "a" else f"b{stage}_{position[1:]}"
    if kind == "res":
        if field != "weight":
            raise ValueError(f"unrecognised MXNet ResNet-38 parameter name {name!r} (conv without weight)")
        return f"{block}.conv_{branch}.weight"
    if field == "weight":
        raise ValueError(f"unrecognised MXNet ResNet-38 parameter name {name!r} (BatchNorm 'weight')")
    return f"{block}.bn_{branch}.{_BN_FIELDS[field]}"


def _resnet38_reference() -> dict[str, Tensor]:
    """Names and shapes of the ResNet38 state_dict (meta tensors: no memory, no initialisation)."""
    with torch.device("meta"):
        return ResNet38().state_dict()


def convert_mxnet_arrays(arrays: Mapping[str, np.ndarray], *, source: str = "MXNet arrays") -> dict[str, Tensor]:
    """Rename MXNet A1 arrays to a complete :class:`ResNet38` state_dict (float32, counters 0).

    Raises ValueError naming ``source`` for unknown names, missing or extra keys, or shape mismatches.
    """
    reference = _resnet38_reference()
    converted: dict[str, Tensor] = {}
    problems: list[str] = []
    for name, array in arrays.items():
        try:
            key = mxnet_name_to_torch(name)
        except ValueError as error:
            problems.append(str(error))
            continue
        if key is None:
            continue
        if key in converted:
            problems.append(f"two arrays map to {key!r}")
        elif key not in reference:
            problems.append(f"{name!r} -> {key!r} is not a ResNet38 key")
        elif tuple(array.shape) != tuple(reference[key].shape):
            problems.append(f"{name!r}: shape {tuple(array.shape)} vs ResNet38 {key} {tuple(reference[key].shape)}")
        else:
            converted[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    for key, value in reference.items():
        if key.endswith("num_batches_tracked"):
            converted[key] = torch.zeros((), dtype=value.dtype)
    missing = [key for key in reference if key not in converted]
    if missing:
        problems.append(f"{len(missing)} ResNet38 key(s) not in the file: {', '.join(missing[:5])}")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
        raise ValueError(f"{source}: cannot convert to ResNet38: {shown}")
    return {key: converted[key] for key in reference}


def convert_file(input_path: str | os.PathLike, output_path: str | os.PathLike) -> dict[str, Tensor]:
    """Convert ``input_path`` (.params) and write the state_dict atomically to ``output_path`` (.pth)."""
    state_dict = convert_mxnet_arrays(read_mxnet_params(input_path), source=os.fspath(input_path))
    with atomic_write(output_path) as handle:
        torch.save(state_dict, handle)
    return state_dict


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.convert_resnet38",
        description="Convert MXNet ResNet-38 A1 ImageNet weights (.params) into an auxseg resnet38 state_dict (.pth).",
    )
    parser.add_argument("input", help="MXNet file, e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    parser.add_argument("output", help="output .pth path (written atomically)")
    args = parser.parse_args(argv)
    try:
        state_dict = convert_file(args.input, args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(state_dict)} tensors to {args.output} (sha256 {file_sha256(args.output)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
