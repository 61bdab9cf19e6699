"""Change detectors, one small module each, with one small interface.

Each detector has: ``update_many(values) -> list[int]`` (the indices at which it fired; after
a firing it starts afresh with the next value), ``drift_detected`` (whether the last value fed
fired), ``params``, and ``snapshot()`` / ``from_snapshot()`` with plain JSON-compatible state,
validated when read back. Parameters, defaults and firing positions are those of river's
detectors of the same name, the reference the tests compare against.

ADWIN and Page-Hinkley run on every value of every numeric feature: :func:`update_all` feeds
many of them (say, one per numeric feature of a model) in one compiled call per kind (numba, see
:mod:`._kernels`), so the fixed cost of a call is paid once for all the streams. DDM, EDDM,
HDDM_A, HDDM_W and KSWIN run on a model's error stream (one value per joined label) and go
value by value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream_monitor.stats.drift import adwin, page_hinkley
from stream_monitor.stats.drift.adwin import ADWIN
from stream_monitor.stats.drift.ddm import DDM
from stream_monitor.stats.drift.eddm import EDDM
from stream_monitor.stats.drift.hddm_a import HDDMA
from stream_monitor.stats.drift.hddm_w import HDDMW
from stream_monitor.stats.drift.kswin import KSWIN
from stream_monitor.stats.drift.page_hinkley import PageHinkley
from stream_monitor.stats.levels import ewma_paths

__all__ = [
    "ADWIN",
    "DDM",
    "EDDM",
    "HDDMA",
    "HDDMW",
    "KSWIN",
    "PageHinkley",
    "update_all",
    "warm_up",
]


def update_all(
    detectors: Sequence[ADWIN | PageHinkley], batches: Sequence[np.ndarray]
) -> list[list[int]]:
    """Feed ``batches[i]`` to ``detectors[i]``; return each one's firing indices.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, 2000), rng.normal(2, 1, 2000)])
    >>> dets = [ADWIN(), PageHinkley(), ADWIN()]
    >>> fired = update_all(dets, [x, x, x[:1000]])
    >>> fired[0] == ADWIN().update_many(x), fired[2]
    (True, [])
    """
    fired: list[list[int]] = [[] for _ in detectors]
    for module, cls in ((adwin, ADWIN), (page_hinkley, PageHinkley)):
        idx = [i for i, d in enumerate(detectors) if isinstance(d, cls)]
        if len(idx) == len(detectors):  # one kind (the usual call)
            return module.update_all(detectors, batches)  # type: ignore[arg-type]
        if idx:
            out = module.update_all([detectors[i] for i in idx], [batches[i] for i in idx])  # type: ignore[arg-type]
            for i, f in zip(idx, out, strict=True):
                fired[i] = f
    return fired


def warm_up() -> None:
    """Compile the detectors' kernels, or load them from numba's cache, before a batch needs
    them: each path runs once on a few values, and so does the kernel of the levels that
    judge a firing's direction (:mod:`stream_monitor.stats.levels`). The first time on a
    machine (an empty cache) this takes seconds; after it, about a second.

    >>> warm_up()
    """
    x = np.linspace(0.0, 1.0, 64)
    update_all([ADWIN(), PageHinkley()], [x, x])  # the array passes
    ADWIN().update_many(x[:2])  # the per-value path of short batches and window detectors
    ewma_paths([x], (0.5,), [[0.0]])
