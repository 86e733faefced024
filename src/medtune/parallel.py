"""One way to fan work out over processes: results in input order, every worker kept busy.

A sliding window of tasks in flight (``workers * 4``): memory stays bounded however many items
there are, output order (and so output bytes) does not depend on the number of workers, and no
worker waits for a slow item elsewhere (fixed batches left each core idle ~10% of the time).
Workers are spawned, not forked: a parent may run threads (progress bars, writeback), and
forking a threaded process is unsafe.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import AsyncResult
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(
    work: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[object, ...] = (),
    max_tasks_per_child: int | None = None,
) -> Iterator[Result]:
    """``work`` over ``items`` in ``workers`` processes (in this one when ``workers`` is 1),
    each set up once by ``initializer(*initargs)``; yields results in input order."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(work, items)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer, initargs, maxtasksperchild=max_tasks_per_child) as pool:
        window: deque[AsyncResult[Result]] = deque()
        for item in items:
            window.append(pool.apply_async(work, (item,)))
            if len(window) >= workers * 4:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()
