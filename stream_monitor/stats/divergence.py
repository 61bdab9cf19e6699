"""Divergences between binned distributions."""

from __future__ import annotations

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
