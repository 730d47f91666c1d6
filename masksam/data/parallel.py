"""Running one function over many cases, in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


def _init_worker() -> None:
    # One thread per process: the parallelism is over cases, and oversubscribed OpenMP pools are slower.
    import torch

    torch.set_num_threads(1)


def map_cases(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    num_workers: int = 0,
    description: str = "",
    progress: bool = True,
) -> list[Result]:
    """Applies ``function`` to every item, in order, optionally in ``num_workers`` processes.

    Args:
        function: A picklable (module-level) function of one argument.
        items: Its arguments (picklable).
        num_workers: 0 runs in this process; otherwise the size of a spawn-started process pool.
        description: Progress bar label.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        ``[function(item) for item in items]``.
    """
    bar = tqdm(total=len(items), desc=description, disable=not progress or not items, unit="case")
    try:
        if num_workers <= 0 or len(items) <= 1:
            results = []
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
        with ProcessPoolExecutor(min(num_workers, len(items)), mp_context=context, initializer=_init_worker) as pool:
            results = []
            for result in pool.map(function, items, chunksize=1):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()
