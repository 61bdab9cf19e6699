"""Exponentially weighted means of many streams in one compiled call.

A numeric feature keeps a fast and a slow level of its PIT scores (weights ``0.01`` and
``0.001``): where its change detectors agree, the levels say whether the change went away from
the reference or back towards it. The levels are carried from batch to batch as plain numbers,
so they must not depend on where a batch ends: each is the exact recurrence
``y = alpha * x + (1 - alpha) * y_before``, value by value, operation for operation as
``scipy.signal.lfilter([alpha], [1, alpha - 1], x, zi=[(1 - alpha) * y_before])`` computes it
(tests/unit/test_levels.py checks the two against each other to the bit). One call runs every
stream of a batch and both weights, where ``lfilter`` took a call per weight and per length of
stream (some fifty microseconds each, a few per model and batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream_monitor.stats.compiled import compiled, offsets

__all__ = ["ewma_paths"]


@compiled
def _ewma(x: np.ndarray, x_lo: np.ndarray, alphas: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Row ``a`` of the result: the means of weight ``alphas[a]`` after each value of ``x``,
    stream ``s`` (``x[x_lo[s]:x_lo[s + 1]]``) starting from ``levels[s, a]``; ``levels`` is
    left at each stream's last means."""
    out = np.empty((len(alphas), len(x)))
    for s in range(len(x_lo) - 1):
        for a in range(len(alphas)):
            alpha = alphas[a]
            keep = 1.0 - alpha
            y = levels[s, a]
            z = keep * y  # lfilter's state: the part of the next mean carried over
            for i in range(x_lo[s], x_lo[s + 1]):
                y = alpha * x[i] + z
                z = keep * y
                out[a, i] = y
            levels[s, a] = y
    return out


def ewma_paths(
    streams: Sequence[np.ndarray], alphas: Sequence[float], levels: Sequence[Sequence[float]]
) -> list[list[np.ndarray]]:
    """Per stream and weight, the exponentially weighted means after each value of the stream
    (``streams[s]``, finite floats), starting from ``levels[s][a]`` for weight ``alphas[a]``.

    >>> [[y.tolist() for y in p] for p in ewma_paths([np.array([1.0, 1.0]), np.zeros(0)],
    ...                                               [0.5], [[0.0], [3.0]])]
    [[[0.5, 0.75]], [[]]]
    """
    lo = offsets([len(x) for x in streams])
    x = np.concatenate(streams) if streams else np.zeros(0)
    start = np.array(levels, dtype=np.float64).reshape(len(streams), len(alphas))
    out = _ewma(x.astype(np.float64, copy=False), lo, np.array(alphas, dtype=np.float64), start)
    bounds = lo.tolist()
    return [
        [out[a, bounds[s] : bounds[s + 1]] for a in range(len(alphas))] for s in range(len(streams))
    ]
