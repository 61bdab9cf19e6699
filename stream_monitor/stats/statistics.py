"""The window statistics: one registry entry per statistic, and nothing else to edit.

Each :class:`Statistic` says how to compute it for many (reference, window) count-vector pairs
at once, whether it needs ordered bins (numeric features only), whether it needs the bins'
representative values, and its default thresholds. The configuration's allowed names, the
calibration (:func:`stream_monitor.stats.calibrate.batch_statistics`), the features that apply
them and the metric help text all read :data:`REGISTRY`.

Adding a statistic: one :class:`Statistic` in :data:`REGISTRY` below, with a vectorised
``compute`` over a :class:`Pairs`, plus a test that checks it against an independent
computation (tests/unit/test_calibrate.py does this for every entry).

Examples
--------
>>> names()
('psi', 'jensen_shannon', 'hellinger', 'ks', 'wasserstein', 'chi_squared')
>>> [s.name for s in REGISTRY.values() if s.ordered]
['ks', 'wasserstein']
>>> default_fixed()["psi"], default_min_effect()["chi_squared"]
(0.25, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "REGISTRY",
    "Pairs",
    "Statistic",
    "default_fixed",
    "default_min_effect",
    "names",
]


class Pairs:
    """Many (reference, window) count-vector pairs, shape ``(m, k)`` each, with the
    quantities several statistics share computed once, on first use.

    Rows whose reference or window total is 0 get a dummy total of 1 here; the caller sets
    their statistics to NaN. ``r_tot`` and ``c_tot``: the rows' totals (float64) where the
    caller knows them (the row sums otherwise), e.g. multinomial draws of a fixed size.
    """

    def __init__(
        self,
        ref: np.ndarray,
        cur: np.ndarray,
        *,
        points: np.ndarray | None = None,
        scale: np.ndarray | float | None = None,
        eps: float = 1e-4,
        r_tot: np.ndarray | None = None,
        c_tot: np.ndarray | None = None,
    ) -> None:
        self.ref, self.cur = ref, cur
        self.points, self.scale, self.eps = points, scale, eps
        self.r_tot = ref.sum(axis=1) if r_tot is None else r_tot
        self.c_tot = cur.sum(axis=1) if c_tot is None else c_tot

    @cached_property
    def p(self) -> np.ndarray:
        """Reference proportions."""
        return self.ref / np.where(self.r_tot > 0, self.r_tot, 1.0)[:, None]

    @cached_property
    def q(self) -> np.ndarray:
        """Window proportions."""
        return self.cur / np.where(self.c_tot > 0, self.c_tot, 1.0)[:, None]

    @cached_property
    def cdf_diff(self) -> np.ndarray:
        """``|F_ref - F_window|`` at the upper edge of every bin (ordered bins)."""
        cr = np.cumsum(self.ref, axis=1)
        cc = np.cumsum(self.cur, axis=1)
        d = cr / cr[:, -1:]
        d -= cc / cc[:, -1:]
        return np.abs(d, out=d)


@dataclass(frozen=True)
class Statistic:
    """One window statistic.

    Attributes
    ----------
    name
        Its name in the configuration, metrics (``statistic`` label) and alerts (``signal``).
    compute
        ``compute(pairs) -> (m,) float64`` for every pair of a :class:`Pairs` (NaN-free for
        rows with positive totals).
    ordered
        Needs an order among bins: applies to numeric features only.
    needs_points
        Needs the bins' representative values and a scale (``Pairs.points``, ``.scale``).
    fixed
        Default threshold in ``thresholds.mode = "fixed"``; None: no default (never alerts
        in that mode unless configured).
    min_effect
        Default smallest value worth an alert in ``thresholds.mode = "calibrated"``.
    help
        One line for the documentation and the metric help text.
    """

    name: str
    compute: Callable[[Pairs], np.ndarray]
    ordered: bool
    needs_points: bool
    fixed: float | None
    min_effect: float
    help: str


# The computations below are those of the plain formulas, operation for operation (so their
# results are the same to the last bit), written with in-place operations and ndarray methods:
# the per-window calls see arrays of a few rows, where numpy's per-call overhead is the cost,
# and calibrations see 20 000-row ones, where temporaries are.


def _psi(s: Pairs) -> np.ndarray:
    # sum((qc - pc) * log(qc / pc)) with proportions clipped below at eps.
    pc = np.maximum(s.p, s.eps)
    qc = np.maximum(s.q, s.eps)
    diff = qc - pc
    qc /= pc
    diff *= np.log(qc, out=qc)
    return diff.sum(axis=1)


def _kl_to_mid(a: np.ndarray, mid: np.ndarray) -> np.ndarray:
    # sum(a * log(a / mid)) over the bins where a > 0 (0 elsewhere).
    pos = a > 0
    ratio = np.divide(a, mid, out=np.ones_like(a), where=pos)
    ratio = np.log(ratio, out=ratio)
    ratio *= a
    return np.where(pos, ratio, 0.0).sum(axis=1)


def _jensen_shannon(s: Pairs) -> np.ndarray:
    mid = s.p + s.q
    mid *= 0.5
    js = _kl_to_mid(s.p, mid)
    js += _kl_to_mid(s.q, mid)
    js *= 0.5
    return np.sqrt(np.maximum(js, 0.0, out=js), out=js)


def _hellinger(s: Pairs) -> np.ndarray:
    d = np.sqrt(s.p)
    d -= np.sqrt(s.q)
    h2 = np.square(d, out=d).sum(axis=1)
    h2 *= 0.5
    return np.sqrt(np.minimum(np.maximum(h2, 0.0, out=h2), 1.0, out=h2), out=h2)


def _ks(s: Pairs) -> np.ndarray:
    return s.cdf_diff.max(axis=1)


def _wasserstein(s: Pairs) -> np.ndarray:
    assert s.points is not None and s.scale is not None
    x = s.points
    w = s.cdf_diff[:, :-1] * (x[..., 1:] - x[..., :-1])
    return w.sum(axis=1) / s.scale


def _chi_squared(s: Pairs) -> np.ndarray:
    ref, cur = s.ref, s.cur
    col = ref + cur
    keep = col > 0  # the counts are non-negative: a bin non-empty on either side
    n_tot = (s.r_tot + s.c_tot)[:, None]
    e_ref = s.r_tot[:, None] * col
    e_ref /= n_tot
    e_cur = s.c_tot[:, None] * col
    e_cur /= n_tot
    terms = ref - e_ref
    terms = np.square(terms, out=terms)
    terms /= e_ref
    t_cur = cur - e_cur
    t_cur = np.square(t_cur, out=t_cur)
    t_cur /= e_cur
    terms += t_cur
    stat = np.where(keep, terms, 0.0).sum(axis=1)
    return np.where(np.count_nonzero(keep, axis=1) >= 2, stat, 0.0)


#: Every statistic, by name, in the order the configuration lists them by default.
REGISTRY: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic(
            "psi",
            _psi,
            ordered=False,
            needs_points=False,
            fixed=0.25,
            min_effect=0.1,
            help="population stability index (proportions clipped at 1e-4)",
        ),
        Statistic(
            "jensen_shannon",
            _jensen_shannon,
            ordered=False,
            needs_points=False,
            fixed=0.2,
            min_effect=0.1,
            help="Jensen-Shannon distance, natural log",
        ),
        Statistic(
            "hellinger",
            _hellinger,
            ordered=False,
            needs_points=False,
            fixed=0.2,
            min_effect=0.1,
            help="Hellinger distance",
        ),
        Statistic(
            "ks",
            _ks,
            ordered=True,
            needs_points=False,
            fixed=0.15,
            min_effect=0.05,
            help="Kolmogorov-Smirnov distance on the bins",
        ),
        Statistic(
            "wasserstein",
            _wasserstein,
            ordered=True,
            needs_points=True,
            fixed=0.5,
            min_effect=0.1,
            help="Wasserstein-1 distance on the bins, scaled by the reference IQR",
        ),
        Statistic(
            "chi_squared",
            _chi_squared,
            ordered=False,
            needs_points=False,
            fixed=None,
            min_effect=0.0,
            help="chi-squared homogeneity statistic (bins empty in both left out)",
        ),
    )
}


def names() -> tuple[str, ...]:
    """The statistics' names, in registry order."""
    return tuple(REGISTRY)


def default_fixed() -> dict[str, float]:
    """Default fixed thresholds (statistics that have one)."""
    return {n: s.fixed for n, s in REGISTRY.items() if s.fixed is not None}


def default_min_effect() -> dict[str, float]:
    """Default minimum effects of calibrated thresholds."""
    return {n: s.min_effect for n, s in REGISTRY.items()}
