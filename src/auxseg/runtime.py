"""Numeric precision of the forward passes: when bf16 autocast is on, and the context managers that apply it.

One policy for every stage, tool and ``auxseg predict`` (``runtime`` params, :class:`auxseg.config.RuntimeParams`):

=========  ==========================  =============================================================
device     inference (``training=False``)  trainings (``training=True``)
=========  ==========================  =============================================================
CUDA       ``runtime.amp_bf16``            ``runtime.amp_bf16``
CPU        ``runtime.cpu_bf16``            ``runtime.cpu_bf16_train``
other      fp32                            fp32
=========  ==========================  =============================================================

The CPU settings take ``auto | on | off``: ``auto`` is on when the CPU runs bf16 natively (AVX512-BF16 or AMX on
x86, the BF16 extension on Arm), as PyTorch/oneDNN report it (:func:`cpu_bf16_native`), off otherwise; ``on``
forces it (a CPU without native bf16 then emulates it, usually slower than fp32). bf16 results depend on the CPU's
instruction set, so the committed default pipeline keeps the CPU at fp32 (``cpu_bf16: "off"``) and stays
bit-identical across machines.

Under :func:`inference_autocast` convolutions and matrix products run in bf16 (PyTorch's autocast op lists); the
numerics that must stay fp32 switch autocast off themselves with :func:`full_precision` (task affinity softmax,
CAM normalisation and propagation for the labels, the softmax of multi-scale inference, the losses); the CRFs and
metrics run in numpy on float32 arrays. With bf16 on the CPU the model runs in channels_last
(:func:`inference_model`), where oneDNN's bf16 convolutions are fastest.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from typing import Any, Iterator

import torch

CPU_BF16_CHOICES = ("auto", "on", "off")


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """True when this CPU computes bf16 natively, as PyTorch and oneDNN detect it (cached).

    oneDNN must support bf16 on the CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``). On x86 that is also
    true for plain AVX-512, where bf16 is emulated and slow, so x86 additionally needs AVX512-BF16 or AMX
    (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, cpuinfo through PyTorch). Any query
    PyTorch lacks counts as "no".
    """
    try:
        if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # Arm: oneDNN reports bf16 only with the BF16 extension
    for query in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, query, None)
        if check is not None and check():
            return True
    return False


def resolve_cpu_bf16(setting: str) -> bool:
    """``auto | on | off`` → whether the CPU uses bf16 autocast (``auto``: :func:`cpu_bf16_native`)."""
    if setting not in CPU_BF16_CHOICES:
        raise ValueError(f"cpu_bf16 setting must be one of {list(CPU_BF16_CHOICES)}, got {setting!r}")
    if setting == "auto":
        return cpu_bf16_native()
    return setting == "on"


def use_bf16(runtime: Any, device: torch.device | str, *, training: bool = False) -> bool:
    """Whether forward passes on ``device`` run under bf16 autocast, per the table of this module.

    ``runtime``: a :class:`auxseg.config.RuntimeParams` (or anything with ``amp_bf16``, ``cpu_bf16`` and
    ``cpu_bf16_train``); ``training`` selects the trainings' switch on the CPU.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(runtime.amp_bf16)
    if kind == "cpu":
        return resolve_cpu_bf16(runtime.cpu_bf16_train if training else runtime.cpu_bf16)
    return False


def bf16_autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast(device type, bfloat16, enabled)``; a no-op context on device types without autocast."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=bool(enabled))


def inference_autocast(runtime: Any, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context for the forward passes of an inference stage (make_cams, update_labels, evaluate, single-stage
    inference, eval_classifier, the benchmarks, ``auxseg predict``): bf16 autocast when :func:`use_bf16` says so."""
    return bf16_autocast(device, use_bf16(runtime, device, training=False))


def inference_memory_format(device: torch.device | str, bf16: bool) -> torch.memory_format:
    """``torch.channels_last`` for bf16 forward passes on the CPU, else ``torch.contiguous_format``.

    oneDNN's bf16 convolutions run fastest on NHWC tensors: ResNet-38 at 375×500 on 2 cores of an AVX512-BF16 CPU
    took 4188 ms in fp32, 2181 ms in bf16 (1.92×) and 1830 ms in bf16 with channels_last (2.29×), min of 3 runs in
    one process. fp32 keeps the default layout, so fp32 results do not change.
    """
    return torch.channels_last if bf16 and torch.device(device).type == "cpu" else torch.contiguous_format


def inference_model(model: torch.nn.Module, runtime: Any, device: torch.device | str) -> torch.nn.Module:
    """``model`` moved to ``device`` in the memory format of :func:`inference_memory_format` for the precision that
    :func:`inference_autocast` will use (the conv weights' layout decides the layout oneDNN computes in)."""
    bf16 = use_bf16(runtime, device, training=False)
    return model.to(device=torch.device(device), memory_format=inference_memory_format(device, bf16))


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Switch autocast off on ``device``'s type inside an autocast region (callers cast inputs with ``.float()``)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        yield
        return
    with torch.autocast(device_type=kind, enabled=False):
        yield


def precision_name(enabled: bool) -> str:
    """"bf16" or "fp32", for reports."""
    return "bf16" if enabled else "fp32"


__all__ = [
    "CPU_BF16_CHOICES",
    "bf16_autocast",
    "cpu_bf16_native",
    "full_precision",
    "inference_autocast",
    "inference_memory_format",
    "inference_model",
    "precision_name",
    "resolve_cpu_bf16",
    "use_bf16",
]
