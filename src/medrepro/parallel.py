"""Process-parallel map with a progress bar and results in input order."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from tqdm import tqdm


def pmap(func: Callable, items: Sequence, threads: int = 1, desc: str = "", chunksize: int | None = None) -> list:
    """``[func(x) for x in items]`` over ``threads`` worker processes.

    Results keep the order of ``items``, so output never depends on scheduling.
    With ``threads <= 1`` everything runs in this process (no pickling).
    A bar on stderr shows progress; Snakemake sends it to the rule's log.
    """
    items = list(items)
    bar = dict(total=len(items), desc=desc, file=sys.stderr, mininterval=2.0, disable=not items)
    if threads <= 1 or len(items) < 2:
        return [func(x) for x in tqdm(items, **bar)]
    workers = min(threads, len(items), os.cpu_count() or 1)
    if chunksize is None:
        chunksize = max(1, len(items) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(tqdm(ex.map(func, items, chunksize=chunksize), **bar))


def seeded(seed: int, *keys: int | str) -> "np.random.Generator":  # noqa: F821
    """A generator for one item, independent of how items are spread over workers."""
    import zlib

    import numpy as np

    words = [int(seed)] + [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(words)

