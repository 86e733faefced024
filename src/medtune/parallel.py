"""One way to fan work out over processes: results in input order, every worker kept busy.

A sliding window of tasks in flight (``workers * 4``): memory stays bounded however many items
there are, output order (and so output bytes) does not depend on the number of workers, and no
worker waits for a slow item elsewhere (fixed batches left each core idle ~10% of the time).
Workers are spawned by default. Forking is unsafe once a parent runs threads (a writeback
thread, a library's thread pool) or has used libraries that do not survive a fork (OpenMP,
CUDA). A caller whose parent does neither may ask for ``start="fork"``: on Linux, with no
thread but the main one, workers then start in milliseconds instead of re-importing pydicom,
numpy and pydantic (about a second of CPU each, most of a short run on two cores).
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from multiprocessing.pool import AsyncResult
from typing import Literal, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(
    work: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[object, ...] = (),
    max_tasks_per_child: int | None = None,
    start: Literal["spawn", "fork"] = "spawn",
    batch: int = 1,
) -> Iterator[Result]:
    """``work`` over ``items`` in ``workers`` processes (in this one when ``workers`` is 1),
    each set up once by ``initializer(*initargs)``; yields results in input order.
    ``start="fork"`` forks when that is safe here (see the module docstring), else spawns.
    ``batch`` items travel per task: for items of a few milliseconds, one task each would
    spend as much of the parent's time on the pool's messages as the workers spend working.
    ``max_tasks_per_child`` counts tasks, not items."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(work, items)
        return
    forking = start == "fork" and fork_is_safe()
    context = multiprocessing.get_context("fork" if forking else "spawn")
    if forking:
        # Forked workers share the parent's pages until they write to them, and the garbage
        # collector writes into every object it scans: freezing the parent's objects keeps each
        # worker from copying the parent's whole heap (workers had grown with the input list).
        gc.freeze()
    try:
        yield from _pooled(context, work, items, workers, initializer, initargs,
                           max_tasks_per_child, batch)  # fmt: skip
    finally:
        if forking:
            gc.unfreeze()


def _pooled(  # type: ignore[no-untyped-def]
    context, work, items, workers, initializer, initargs, max_tasks_per_child, batch
) -> Iterator[Result]:
    with context.Pool(workers, initializer, initargs, maxtasksperchild=max_tasks_per_child) as pool:
        window: deque[AsyncResult[list[Result]]] = deque()
        iterator = iter(items)
        while chunk := list(islice(iterator, batch)):
            window.append(pool.apply_async(_work_all, (work, chunk)))
            if len(window) >= workers * 4:
                yield from window.popleft().get()
        while window:
            yield from window.popleft().get()


def _work_all(work: Callable[[Item], Result], chunk: list[Item]) -> list[Result]:
    return [work(item) for item in chunk]


def fork_is_safe() -> bool:
    """Linux (macOS system libraries do not survive a fork) and no thread but this one."""
    return sys.platform.startswith("linux") and threading.active_count() == 1
