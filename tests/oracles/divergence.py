"""Divergences, distances and a homogeneity test between binned distributions (count vectors)."""

from __future__ import annotations

import math

import numpy as np


def psi(reference: np.ndarray, current: np.ndarray, eps: float = 1e-4) -> float:
    """Population Stability Index between two count vectors over the same bins.

    ``p = reference / reference.sum()`` and ``q = current / current.sum()`` are clipped below at
    ``eps`` (so empty bins do not give infinities) and are deliberately *not* renormalised
    afterwards; then ``PSI = sum((q - p) * ln(q / p))``. Without clipping this is the symmetric
    (Jeffreys) divergence ``KL(q || p) + KL(p || q)``.

    Usual reading: < 0.1 no significant change, 0.1-0.25 moderate change, > 0.25 significant
    change. Compare small values with :func:`psi_noise_floor`, which grows with the number of
    bins and shrinks with the sample sizes.

    Parameters
    ----------
    reference, current
        Non-negative counts (or proportions) of equal length, each with a positive sum.
    eps
        Lower clip applied to both proportion vectors.

    Returns
    -------
    float
        PSI, >= 0.

    Raises
    ------
    ValueError
        On a length mismatch, negative counts or an empty side (sum 0).

    Examples
    --------
    >>> psi(np.array([50, 50]), np.array([50, 50]))
    0.0
    >>> round(psi(np.array([50, 50]), np.array([80, 20])), 4)
    0.4159
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"length mismatch: {ref.size} reference vs {cur.size} current bins")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("reference and current must each have a positive total")
    p = np.clip(ref / ref.sum(), eps, None)
    q = np.clip(cur / cur.sum(), eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_noise_floor(n_bins: int, n_ref: int, n_cur: int) -> float:
    """Expected PSI when there is no drift, for samples of sizes ``n_ref`` and ``n_cur``.

    For two independent samples from the same distribution, PSI is to second order
    ``sum((q - p)**2 / p)``, i.e. ``(1/n_ref + 1/n_cur)`` times an asymptotically chi-squared
    statistic with ``n_bins - 1`` degrees of freedom, so its mean is approximately
    ``(n_bins - 1) * (1/n_ref + 1/n_cur)``. Edges taken from reference quantiles fluctuate in
    the same way, so the approximation still holds then. It is poor when bins hold only a
    handful of values.

    Examples
    --------
    >>> round(psi_noise_floor(10, 1000, 1000), 6)
    0.018
    """
    if n_bins < 1 or n_ref < 1 or n_cur < 1:
        raise ValueError("n_bins, n_ref and n_cur must be >= 1")
    return (n_bins - 1) * (1.0 / n_ref + 1.0 / n_cur)


# ----------------------------------------------------------------------------- shared checks


def _check_pair(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies of two count vectors over the same bins."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"length mismatch: {ref.size} reference vs {cur.size} current bins")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise ValueError("counts must be finite")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("reference and current must each have a positive total")
    return ref, cur


def _cdfs(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative proportions at the right end of each bin (``cumsum(counts) / total``)."""
    cr = np.cumsum(ref)
    cc = np.cumsum(cur)
    return cr / cr[-1], cc / cc[-1]


# ----------------------------------------------------------------------- distances on counts


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon *distance* between two count vectors over the same bins.

    With ``p = reference / reference.sum()``, ``q = current / current.sum()`` and
    ``m = (p + q) / 2`` this returns ``sqrt(JSD)`` where
    ``JSD = (KL(p || m) + KL(q || m)) / 2`` uses the natural logarithm. It is the square root
    of the divergence (a metric), not the divergence itself, and lies in ``[0, sqrt(ln 2)]``
    (``sqrt(ln 2) ~= 0.8326`` for disjoint supports). It equals
    ``scipy.spatial.distance.jensenshannon(p, q)``.

    Empty bins need no clipping: terms with ``p_i = 0`` (or ``q_i = 0``) contribute 0
    (``0 * ln 0 = 0``) and ``m_i > 0`` wherever either is positive, so the result is always
    finite. Only proportions matter, so scaling either count vector leaves it unchanged.

    Parameters
    ----------
    reference, current
        Non-negative, finite counts (or proportions) of equal length, each with a positive sum.

    Returns
    -------
    float
        The Jensen-Shannon distance, in ``[0, sqrt(ln 2)]``; symmetric in its arguments.

    Raises
    ------
    ValueError
        On a length mismatch, negative or non-finite counts or an empty side (sum 0).

    Examples
    --------
    >>> jensen_shannon(np.array([10, 30]), np.array([1, 3]))
    0.0
    >>> round(jensen_shannon(np.array([50, 50]), np.array([80, 20])), 6)
    0.225104
    >>> round(jensen_shannon(np.array([1, 0]), np.array([0, 1])) ** 2, 6)  # ln 2
    0.693147
    """
    ref, cur = _check_pair(reference, current)
    p = ref / ref.sum()
    q = cur / cur.sum()
    m = 0.5 * (p + q)
    pos_p = p > 0
    pos_q = q > 0
    kl_pm = np.sum(p[pos_p] * np.log(p[pos_p] / m[pos_p]))
    kl_qm = np.sum(q[pos_q] * np.log(q[pos_q] / m[pos_q]))
    return float(np.sqrt(max(0.5 * (kl_pm + kl_qm), 0.0)))


def hellinger(reference: np.ndarray, current: np.ndarray) -> float:
    """Hellinger distance between two count vectors over the same bins.

    ``H = sqrt(1 - sum(sqrt(p * q)))`` with ``p``, ``q`` the proportions, i.e. one minus the
    Bhattacharyya coefficient under the root. It is computed in the algebraically equal form
    ``sqrt(sum((sqrt(p) - sqrt(q))**2) / 2)``, which avoids cancellation when ``p`` and ``q``
    are close. ``H`` lies in ``[0, 1]``: 0 for identical proportions, 1 for disjoint supports.
    Empty bins are fine (``sqrt(0) = 0``); only proportions matter.

    Parameters
    ----------
    reference, current
        Non-negative, finite counts (or proportions) of equal length, each with a positive sum.

    Returns
    -------
    float
        The Hellinger distance, in ``[0, 1]``; symmetric in its arguments.

    Raises
    ------
    ValueError
        On a length mismatch, negative or non-finite counts or an empty side (sum 0).

    Examples
    --------
    >>> hellinger(np.array([2, 0, 2]), np.array([5, 0, 5]))
    0.0
    >>> hellinger(np.array([3, 0]), np.array([0, 7]))
    1.0
    >>> round(hellinger(np.array([1, 1]), np.array([1, 0])), 6)  # sqrt(1 - sqrt(1/2))
    0.541196
    """
    ref, cur = _check_pair(reference, current)
    p = ref / ref.sum()
    q = cur / cur.sum()
    h2 = 0.5 * float(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))
    return float(np.sqrt(min(max(h2, 0.0), 1.0)))


def wasserstein_binned(reference: np.ndarray, current: np.ndarray, points: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between two binned distributions.

    Each bin is represented by one point on the real line: all of bin ``i``'s mass is placed at
    ``points[i]``. So ``points`` has one entry *per bin* (length ``n_bins``, not
    ``n_bins + 1`` edges). For the numeric bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``
    a natural choice is the interior midpoints ``(e[i-1] + e[i]) / 2`` with the two open end
    bins represented by the reference minimum and maximum (see the example); the caller must
    use the *same* points for both sides. The distance is then

    ``W1 = sum_i |P_i - Q_i| * (points[i + 1] - points[i])``,  ``i = 0 .. n_bins - 2``,

    where ``P``, ``Q`` are the cumulative proportions at the end of each bin. This is exactly
    ``scipy.stats.wasserstein_distance(points, points, p, q)`` (weights ``p``, ``q``). It is in
    the units of the feature, so use :func:`wasserstein_scaled` to compare features. Empty bins
    are fine and only proportions matter.

    Parameters
    ----------
    reference, current
        Non-negative, finite counts of equal length ``n_bins``, each with a positive sum.
    points
        Finite, non-decreasing representative value of each bin, length ``n_bins``.

    Returns
    -------
    float
        ``W1 >= 0``, symmetric in ``reference`` and ``current``; 0 when ``n_bins == 1``.

    Raises
    ------
    ValueError
        On a length mismatch (between the counts, or with ``points``), negative or non-finite
        counts, an empty side, or non-finite / decreasing ``points``.

    Examples
    --------
    >>> edges = np.array([0.0, 1.0, 2.0])  # bins (-inf,0], (0,1], (1,2], (2,inf)
    >>> ref_min, ref_max = -0.5, 3.0
    >>> points = np.concatenate([[ref_min], (edges[:-1] + edges[1:]) / 2, [ref_max]])
    >>> points.tolist()
    [-0.5, 0.5, 1.5, 3.0]
    >>> wasserstein_binned(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]), points)
    2.25
    """
    ref, cur = _check_pair(reference, current)
    x = np.asarray(points, dtype=np.float64).ravel()
    if x.shape != ref.shape:
        raise ValueError(f"points has length {x.size}, expected one per bin ({ref.size})")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) < 0):
        raise ValueError("points must be finite and non-decreasing")
    cdf_p, cdf_q = _cdfs(ref, cur)
    return float(np.dot(np.abs(cdf_p[:-1] - cdf_q[:-1]), np.diff(x)))


def wasserstein_scaled(
    reference: np.ndarray, current: np.ndarray, points: np.ndarray, scale: float
) -> float:
    """:func:`wasserstein_binned` divided by a reference spread, so features are comparable.

    ``scale`` is chosen by the caller from the *reference* data, e.g. its standard deviation or
    inter-quantile range; the result is then in units of that spread (a value of 0.5 means the
    mass moved, on average, half a reference spread) and is invariant to an affine rescaling of
    the feature when ``points`` and ``scale`` are rescaled with it.

    Parameters
    ----------
    reference, current, points
        As for :func:`wasserstein_binned`.
    scale
        Positive, finite reference spread.

    Returns
    -------
    float
        ``wasserstein_binned(reference, current, points) / scale``.

    Raises
    ------
    ValueError
        As for :func:`wasserstein_binned`, or when ``scale`` is not positive and finite.

    Examples
    --------
    >>> pts = np.array([0.0, 10.0, 20.0])
    >>> wasserstein_scaled(np.array([1, 0, 0]), np.array([0, 0, 1]), pts, scale=10.0)
    2.0
    """
    s = float(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError("scale must be positive and finite")
    return wasserstein_binned(reference, current, points) / s


def ks_binned(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic evaluated at the bin boundaries.

    ``D = max_i |P_i - Q_i|`` where ``P``, ``Q`` are the cumulative proportions at the right
    end of bin ``i``, i.e. the two empirical CDFs evaluated at the bin edges only.

    The exact KS statistic of the raw samples is attained at a sample value. So when every
    distinct sample value (of both samples pooled) is an edge - e.g. ``edges`` = all unique
    pooled values with :func:`~stream_monitor.stats.bin_counts` - this equals
    ``scipy.stats.ks_2samp(a, b).statistic`` exactly. With coarser bins it is a *lower bound*
    on that statistic: it is the maximum over a subset of the points, so binning can only hide
    differences, never create them. Empty bins are fine and only proportions matter.

    Parameters
    ----------
    reference, current
        Non-negative, finite counts of equal length, each with a positive sum.

    Returns
    -------
    float
        ``D`` in ``[0, 1]``; symmetric in its arguments.

    Raises
    ------
    ValueError
        On a length mismatch, negative or non-finite counts or an empty side (sum 0).

    Examples
    --------
    >>> ks_binned(np.array([5, 5, 0]), np.array([0, 5, 5]))
    0.5
    >>> ks_binned(np.array([1, 2, 3]), np.array([2, 4, 6]))
    0.0
    """
    ref, cur = _check_pair(reference, current)
    cdf_p, cdf_q = _cdfs(ref, cur)
    return float(np.max(np.abs(cdf_p - cdf_q)))


# ------------------------------------------------------------------------ chi-squared test

_GAMMA_EPS = 1e-15
_GAMMA_FPMIN = 1e-300
_GAMMA_MAXIT = 1_000_000


def _gamma_prefactor(a: float, x: float) -> float:
    """``exp(-x) * x**a / Gamma(a)``, computed in logs."""
    return math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_p_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma ``P(a, x)`` by its series (good for ``x < a + 1``)."""
    ap = a
    term = 1.0 / a
    total = term
    for _ in range(_GAMMA_MAXIT):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _GAMMA_EPS:
            return total * _gamma_prefactor(a, x)
    raise RuntimeError(f"incomplete gamma series did not converge (a={a}, x={x})")


def _gamma_q_contfrac(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x)`` by its continued fraction (modified Lentz,
    good for ``x >= a + 1``)."""
    b = x + 1.0 - a
    c = 1.0 / _GAMMA_FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _GAMMA_MAXIT):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _GAMMA_FPMIN:
            d = _GAMMA_FPMIN
        c = b + an / c
        if abs(c) < _GAMMA_FPMIN:
            c = _GAMMA_FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _GAMMA_EPS:
            return _gamma_prefactor(a, x) * h
    raise RuntimeError(f"incomplete gamma continued fraction did not converge (a={a}, x={x})")


def _gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x) = Gamma(a, x) / Gamma(a)``, ``a > 0``."""
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(1.0 - _gamma_p_series(a, x), 0.0)
    return _gamma_q_contfrac(a, x)


def chi2_sf(x: float, df: float) -> float:
    """Survival function ``P(X > x)`` of the chi-squared distribution, without scipy.

    Computed as the regularised upper incomplete gamma function ``Q(df / 2, x / 2)``: by its
    power series for ``x / 2 < df / 2 + 1`` and by its continued fraction (modified Lentz)
    otherwise, as in Numerical Recipes' ``gammq``, with ``math.lgamma`` for the prefactor.
    Agrees with ``scipy.stats.chi2.sf`` to about 1e-13 relative for ``df <= 100`` and 1e-11
    for ``df <= 20000``; the log-space prefactor loses accuracy roughly in proportion to ``df``.

    Parameters
    ----------
    x
        The statistic, ``>= 0`` (``inf`` gives 0); NaN is rejected.
    df
        Degrees of freedom, ``> 0``.

    Returns
    -------
    float
        The upper-tail probability, in ``[0, 1]``.

    Raises
    ------
    ValueError
        When ``df <= 0`` (or is not finite), or ``x`` is negative or NaN.

    Examples
    --------
    >>> round(chi2_sf(3.841458820694124, 1), 9)
    0.05
    >>> chi2_sf(0.0, 4)
    1.0
    >>> round(chi2_sf(2.0, 2), 12) == round(math.exp(-1.0), 12)  # df = 2: exp(-x / 2)
    True
    """
    xf = float(x)
    dff = float(df)
    if not (math.isfinite(dff) and dff > 0):
        raise ValueError("df must be positive and finite")
    if math.isnan(xf) or xf < 0:
        raise ValueError("x must be >= 0")
    return _gammaincc(0.5 * dff, 0.5 * xf)


def chi_squared(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity of two count vectors over the same bins.

    Builds the ``2 x k`` contingency table ``[reference, current]``, drops bins that are empty
    in *both* rows (they carry no information and would give zero expected counts), and
    returns Pearson's statistic ``sum((O - E)**2 / E)`` with ``E = row_total * col_total / N``
    and its p-value ``chi2_sf(statistic, k' - 1)`` (``k'`` = bins kept; see :func:`chi2_sf`).
    No continuity correction is applied; the result equals
    ``scipy.stats.chi2_contingency(table, correction=False)[:2]`` on the reduced table. With a
    single non-empty bin there is nothing to test and ``(0.0, 1.0)`` is returned.

    Unlike the distances above this depends on the sample sizes, so pass raw counts, not
    proportions: multiplying both count vectors by ``c`` multiplies the statistic by ``c``.
    The usual large-sample caveat applies (expected counts of at least about 5).

    Parameters
    ----------
    reference, current
        Non-negative, finite counts of equal length, each with a positive sum.

    Returns
    -------
    tuple[float, float]
        ``(statistic, p_value)``.

    Raises
    ------
    ValueError
        On a length mismatch, negative or non-finite counts or an empty side (sum 0).

    Examples
    --------
    >>> chi_squared(np.array([10, 0, 30]), np.array([20, 0, 60]))
    (0.0, 1.0)
    >>> stat, p = chi_squared(np.array([30, 10]), np.array([10, 30]))
    >>> round(stat, 6), round(p, 6)
    (20.0, 8e-06)
    """
    ref, cur = _check_pair(reference, current)
    keep = (ref > 0) | (cur > 0)
    observed = np.vstack([ref[keep], cur[keep]])
    dof = observed.shape[1] - 1
    if dof < 1:
        return 0.0, 1.0
    rows = observed.sum(axis=1)
    cols = observed.sum(axis=0)
    expected = np.outer(rows, cols) / observed.sum()
    stat = float(np.sum((observed - expected) ** 2 / expected))
    return stat, chi2_sf(stat, dof)
