"""Map a function over items with a pool of single-threaded worker processes.

Dense CRFs and the other per-image CPU stages are single-threaded C++ or small numpy/torch kernels, so the
fastest layout is one process per core, each pinned to one BLAS/OpenMP thread (oversubscription otherwise
makes N processes × N threads fight over N cores).

The pool uses the "spawn" start method: workers start clean, whatever threads (torch, OpenMP) the parent
has running, and behave the same on Linux and macOS. Consequences for callers: ``fn`` and the items must be
picklable (``fn`` a module-level function, or a ``functools.partial`` of one), and a script that calls
:func:`process_map` at import time must guard it with ``if __name__ == "__main__":``.

This module imports only the standard library at load time, so the worker initializer runs before numpy or
torch are imported in the worker and the thread limits take effect when they load. (A ``__main__`` module
that spawn re-imports in each worker, e.g. ``python -m some.stage``, may load numpy before the initializer
runs; its OpenBLAS then keeps its default thread count, while torch is still limited by the initializer.)
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from typing import Any, Callable, Iterable, Sequence

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_REPR_LIMIT = 200


def limit_worker_threads() -> None:
    """Pool initializer: one thread for OpenMP, OpenBLAS and MKL, and for torch if it is already imported."""
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _describe_item(index: int, item: Any) -> str:
    text = repr(item)
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"process_map: failed on item {index}: {text}"


def _run_chunk(fn: Callable[[Any], Any], start: int, chunk: Sequence[Any]) -> list:
    """Apply fn to each item of a chunk; an exception gets a note naming the item (index and repr) and re-raises."""
    results = []
    for offset, item in enumerate(chunk):
        try:
            results.append(fn(item))
        except Exception as error:
            error.add_note(_describe_item(start + offset, item))
            raise
    return results


def process_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int,
    chunksize: int = 1,
    desc: str | None = None,
) -> list:
    """[fn(item) for item in items], computed by ``workers`` spawned processes, results in input order.

    workers <= 1 (or a single item) runs inline in this process (no pool, no change to its thread settings).
    Items are sent to the workers in chunks of ``chunksize``. If fn raises, the exception of the first failing
    item in input order propagates with its original type and a PEP 678 note "process_map: failed on item
    <index>: <repr>" (shown in the traceback and matched by ``pytest.raises(match=...)``); pending chunks are
    cancelled. ``desc`` shows a tqdm progress bar (counting items) on stderr. The result depends only on fn
    and items, never on the number of workers or the chunk size.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise ValueError(f"workers must be an int, got {workers!r}")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
    item_list = list(items)
    progress = None
    if desc is not None:
        from tqdm import tqdm

        progress = tqdm(total=len(item_list), desc=desc, unit="item", dynamic_ncols=True)
    try:
        if workers <= 1 or len(item_list) <= 1:
            results = []
            for index, item in enumerate(item_list):
                results.extend(_run_chunk(fn, index, [item]))
                if progress is not None:
                    progress.update(1)
            return results
        return _run_pool(fn, item_list, workers, chunksize, progress)
    finally:
        if progress is not None:
            progress.close()


def _run_pool(fn: Callable[[Any], Any], item_list: list, workers: int, chunksize: int, progress: Any) -> list:
    starts = range(0, len(item_list), chunksize)
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(starts)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=limit_worker_threads,
    )
    try:
        futures = []
        for start in starts:
            chunk = item_list[start : start + chunksize]
            future = pool.submit(_run_chunk, fn, start, chunk)
            if progress is not None:
                future.add_done_callback(lambda done, size=len(chunk): done.cancelled() or progress.update(size))
            futures.append(future)
        results: list = []
        for future in futures:
            results.extend(future.result())  # in input order: the first failure in input order is raised
        return results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["limit_worker_threads", "process_map"]
