"""ordered_map: results in input order whatever the number of workers."""

from medtune.parallel import ordered_map

_STATE: dict[str, int] = {}


def _setup(offset: int) -> None:
    _STATE["offset"] = offset


def _work(item: int) -> int:
    return item * item + _STATE["offset"]


def test_results_keep_input_order_in_one_or_several_processes() -> None:
    items = list(range(40))
    expected = [i * i + 7 for i in items]
    assert list(ordered_map(_work, items, 1, _setup, (7,))) == expected
    assert list(ordered_map(_work, iter(items), 2, _setup, (7,), max_tasks_per_child=5)) == expected


def _pid(_: int) -> int:
    import os

    return os.getpid()


def test_fork_is_used_only_without_other_threads() -> None:
    import threading

    from medtune.parallel import fork_is_safe

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not fork_is_safe()  # a running thread: workers must be spawned
        # ... and the spawned workers still give the same results
        assert list(ordered_map(_work, range(10), 2, _setup, (1,), start="fork")) == [
            i * i + 1 for i in range(10)
        ]
    finally:
        stop.set()
        thread.join()


def test_forked_workers_share_the_parents_setup_state() -> None:
    """Forked or spawned, each worker runs the initializer: results never depend on which."""
    _STATE["offset"] = -1000  # a forked child would inherit this without the initializer
    results = list(ordered_map(_work, range(12), 2, _setup, (3,), start="fork"))
    assert results == [i * i + 3 for i in range(12)]
    import os

    pids = set(ordered_map(_pid, range(12), 2, _setup, (0,), start="fork"))
    assert os.getpid() not in pids  # the work ran in the workers
