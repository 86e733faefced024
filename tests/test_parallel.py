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
