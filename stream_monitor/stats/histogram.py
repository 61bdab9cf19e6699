"""Fixed-bin histograms and bounded counters for numeric and categorical features.

Numeric bins are half-open on the left: with interior edges ``e0 < e1 < ... < e_last`` the bins
are ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``, so values outside the reference range land in
the two end bins. Snapshots are plain JSON-serialisable dicts carrying a ``"v"`` version key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

SNAPSHOT_VERSION = 1


def _check_version(d: Mapping[str, Any], what: str) -> None:
    if d.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported {what} snapshot version {d.get('v')!r}")


def _as_edges(edges: Sequence[float] | np.ndarray) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be a 1-D array of finite, strictly increasing floats")
    return e


def quantile_edges(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference quantiles, de-duplicated.

    Parameters
    ----------
    values
        Reference sample; NaNs are ignored.
    n_bins
        Desired number of bins. Features with few distinct values get fewer bins because
        repeated quantiles are merged.

    Returns
    -------
    np.ndarray
        Sorted float64 interior edges (at most ``n_bins - 1``; empty for empty/all-NaN input,
        meaning a single bin).

    Examples
    --------
    >>> quantile_edges(np.arange(1.0, 101.0), n_bins=4)
    array([25.75, 50.5 , 75.25])
    >>> quantile_edges(np.repeat([1.0, 2.0, np.nan], 50), n_bins=10)  # few distinct values
    array([1. , 1.5, 2. ])
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.empty(0, dtype=np.float64)
    qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.unique(np.quantile(v, qs)).astype(np.float64)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Count values into the bins ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``.

    Parameters
    ----------
    values
        Values to count; NaNs are excluded.
    edges
        Sorted interior edges, e.g. from :func:`quantile_edges`.

    Returns
    -------
    np.ndarray
        int64 counts of length ``len(edges) + 1``.

    Examples
    --------
    >>> bin_counts(np.array([-5.0, 1.0, 1.5, 2.0, 9.0, np.nan]), np.array([1.0, 2.0]))
    array([2, 2, 1])
    """
    e = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    idx = np.searchsorted(e, v, side="left")
    return np.bincount(idx, minlength=e.size + 1).astype(np.int64)


class NumericHistogram:
    """Streaming histogram over fixed numeric bin edges.

    Parameters
    ----------
    edges
        Finite, strictly increasing interior edges; there are ``len(edges) + 1`` bins.

    Examples
    --------
    >>> h = NumericHistogram([0.0, 1.0])
    >>> h.update(np.array([-1.0, 0.5, 3.0, np.nan]))
    >>> h.counts.tolist(), h.total, h.missing
    ([1, 1, 1], 3, 1)
    >>> NumericHistogram.from_snapshot(h.snapshot()).counts.tolist()
    [1, 1, 1]
    """

    def __init__(self, edges: Sequence[float] | np.ndarray) -> None:
        self.edges: np.ndarray = _as_edges(edges)
        self.counts: np.ndarray = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.missing: int = 0

    @property
    def total(self) -> int:
        """Number of non-missing values counted."""
        return int(self.counts.sum())

    def update(self, values: np.ndarray) -> None:
        """Add a batch of values; NaNs are counted in :attr:`missing` only."""
        v = np.asarray(values, dtype=np.float64).ravel()
        nan = np.isnan(v)
        self.missing += int(nan.sum())
        self.counts += bin_counts(v[~nan], self.edges)

    def reset(self) -> None:
        """Zero all counts (edges are kept)."""
        self.counts[:] = 0
        self.missing = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "edges": [float(x) for x in self.edges],
            "counts": [int(c) for c in self.counts],
            "missing": int(self.missing),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> NumericHistogram:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        _check_version(d, "NumericHistogram")
        h = cls(d["edges"])
        counts = np.asarray(d["counts"], dtype=np.int64)
        if counts.shape != h.counts.shape:
            raise ValueError("counts length does not match edges")
        h.counts = counts
        h.missing = int(d["missing"])
        return h


class CategoricalHistogram:
    """Streaming counts over a fixed, ordered list of categories plus a trailing "other" bucket.

    Parameters
    ----------
    categories
        Known categories (distinct). Any other value is counted in the last bucket.

    Examples
    --------
    >>> h = CategoricalHistogram(["a", "b"])
    >>> h.update(["a", "b", "a", "zzz"])
    >>> h.counts.tolist(), h.total, h.unseen
    ([2, 1, 1], 4, 1)
    """

    def __init__(self, categories: Sequence[str]) -> None:
        self.categories: list[str] = list(categories)
        self._index: dict[str, int] = {c: i for i, c in enumerate(self.categories)}
        if len(self._index) != len(self.categories):
            raise ValueError("categories must be distinct")
        self.counts: np.ndarray = np.zeros(len(self.categories) + 1, dtype=np.int64)

    @property
    def total(self) -> int:
        """Number of values counted, including "other"."""
        return int(self.counts.sum())

    @property
    def unseen(self) -> int:
        """Number of values not in :attr:`categories` (same as ``counts[-1]``)."""
        return int(self.counts[-1])

    def update(self, values: Sequence[str]) -> None:
        """Add a batch of values."""
        other = len(self.categories)
        idx = np.fromiter(
            (self._index.get(v, other) for v in values), dtype=np.intp, count=len(values)
        )
        self.counts += np.bincount(idx, minlength=other + 1).astype(np.int64)

    def reset(self) -> None:
        """Zero all counts (categories are kept)."""
        self.counts[:] = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "categories": list(self.categories),
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> CategoricalHistogram:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        _check_version(d, "CategoricalHistogram")
        h = cls(d["categories"])
        counts = np.asarray(d["counts"], dtype=np.int64)
        if counts.shape != h.counts.shape:
            raise ValueError("counts length does not match categories")
        h.counts = counts
        return h


def top_categories(counts: Mapping[str, int], k: int) -> list[str]:
    """The ``k`` most frequent keys, ties broken by name (deterministic).

    Examples
    --------
    >>> top_categories({"b": 3, "a": 3, "c": 5, "d": 1}, 3)
    ['c', 'a', 'b']
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


class BoundedCounter:
    """Counts string values with at most ``capacity`` distinct keys.

    A new key arriving once the counter is full is not stored; it is added to :attr:`overflow`.
    Keys already stored keep counting.

    Parameters
    ----------
    capacity
        Maximum number of distinct keys kept.

    Examples
    --------
    >>> c = BoundedCounter(capacity=2)
    >>> c.update(["a", "b", "c", "a", "c"])
    >>> c.counts, c.overflow
    ({'a': 2, 'b': 1}, 2)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity: int = int(capacity)
        self._counts: dict[str, int] = {}
        self.overflow: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the stored counts."""
        return dict(self._counts)

    def update(self, values: Iterable[str]) -> None:
        """Count each value."""
        counts = self._counts
        for v in values:
            if v in counts:
                counts[v] += 1
            elif len(counts) < self.capacity:
                counts[v] = 1
            else:
                self.overflow += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "counts": dict(self._counts),
            "overflow": int(self.overflow),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> BoundedCounter:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        _check_version(d, "BoundedCounter")
        c = cls(int(d["capacity"]))
        c._counts = {str(k): int(n) for k, n in d["counts"].items()}
        if len(c._counts) > c.capacity:
            raise ValueError("more keys than capacity")
        c.overflow = int(d["overflow"])
        return c
