"""Compiled per-value loops of ADWIN and Page-Hinkley.

Each batch kernel takes the streams of one call laid end to end (stream ``s`` is
``x[x_lo[s]:x_lo[s+1]]``) and their detectors' state as arrays, advances every stream value by
value up to and including its first firing (or to its end) and returns that index per stream
(-1: none): one compiled call for all the features of a model keeps the fixed cost of a call
small. The arithmetic is river's per-value update, operation for operation (Page-Hinkley's as
``PageHinkley._first_firing_by_value`` writes it in Python), so the state does not depend on
how a stream is cut into batches. ADWIN's per-value path (a few values per call) is
:func:`adwin_one`, the same loop for one stream.
"""

from __future__ import annotations

import math

import numpy as np

from stream_monitor.stats.compiled import compiled, offsets

__all__ = ["MODE_CODES", "adwin_one", "adwin_pass", "offsets", "page_hinkley_pass"]


#: Page-Hinkley's ``mode`` as the kernel takes it.
MODE_CODES = {"up": 0, "down": 1, "both": 2}


@compiled
def page_hinkley_pass(
    x: np.ndarray,
    x_lo: np.ndarray,
    n: np.ndarray,
    state: np.ndarray,
    min_instances: int,
    delta: float,
    threshold: float,
    alpha: float,
    mode: int,
) -> np.ndarray:
    """Advance each stream; ``n`` and ``state`` (rows of mean, both sums, the increase sum's
    minimum and the decrease sum's maximum) are updated in place. Returns the first firing
    index per stream (-1: none)."""
    hits = np.full(len(x_lo) - 1, -1, dtype=np.int64)
    for s in range(len(x_lo) - 1):
        k = n[s]
        mean, inc, dec = state[s, 0], state[s, 1], state[s, 2]
        min_inc, max_dec = state[s, 3], state[s, 4]
        for i in range(x_lo[s], x_lo[s + 1]):
            v = x[i]
            k += 1
            mean += (v - mean) / k
            dev = v - mean
            inc = alpha * inc + dev - delta
            dec = alpha * dec + dev + delta
            if inc < min_inc:  # as Python's min() and max(): the first of equals stays
                min_inc = inc
            if dec > max_dec:
                max_dec = dec
            if k < min_instances:
                continue
            up = inc - min_inc > threshold
            down = max_dec - dec > threshold
            if (up and mode != 1) or (down and mode != 0):
                hits[s] = i - x_lo[s]
                break
        n[s] = k
        state[s, 0], state[s, 1], state[s, 2] = mean, inc, dec
        state[s, 3], state[s, 4] = min_inc, max_dec
    return hits


@compiled
def adwin_pass(
    x: np.ndarray,
    x_lo: np.ndarray,
    n: np.ndarray,
    sums: np.ndarray,
    sizes: np.ndarray,
    totals: np.ndarray,
    m2s: np.ndarray,
    b_lo: np.ndarray,
    params: tuple[float, int, int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Advance each stream; ``n`` and ``sums`` (rows of the window's total and squared
    deviations) are updated in place. Stream ``s``'s buckets are ``sizes[b_lo[s]:b_lo[s+1]]``
    (and ``totals``, ``m2s``), oldest first; ``params`` are ADWIN's in constructor order.
    Returns the first firing index per stream (-1: none) and the new buckets, laid out the same
    way (sizes, totals, m2s, offsets)."""
    s_count = len(x_lo) - 1
    hits = np.full(s_count, -1, dtype=np.int64)
    sz, tt, mm = _buffers(params[2])
    out_lo = np.zeros(s_count + 1, dtype=np.int64)
    room = len(sizes) + s_count * len(sz)
    out_sizes = np.empty(room, dtype=np.int64)
    out_totals = np.empty(room)
    out_m2s = np.empty(room)
    for s in range(s_count):
        held = b_lo[s + 1] - b_lo[s]
        sz[:held] = sizes[b_lo[s] : b_lo[s + 1]]
        tt[:held] = totals[b_lo[s] : b_lo[s + 1]]
        mm[:held] = m2s[b_lo[s] : b_lo[s + 1]]
        hits[s], held, n[s], sums[s, 0], sums[s, 1] = _adwin_advance(
            x[x_lo[s] : x_lo[s + 1]], sz, tt, mm, held, n[s], sums[s, 0], sums[s, 1], params
        )
        lo = out_lo[s]
        out_sizes[lo : lo + held] = sz[:held]
        out_totals[lo : lo + held] = tt[:held]
        out_m2s[lo : lo + held] = mm[:held]
        out_lo[s + 1] = lo + held
    used = out_lo[s_count]
    return hits, out_sizes[:used].copy(), out_totals[:used].copy(), out_m2s[:used].copy(), out_lo


@compiled
def adwin_one(
    x: np.ndarray,
    sizes: np.ndarray,
    totals: np.ndarray,
    m2s: np.ndarray,
    n: int,
    total: float,
    variance: float,
    params: tuple[float, int, int, int, int],
) -> tuple[int, int, float, float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`adwin_pass` for one stream given as plain values (a few values per call: the
    per-window detectors see one). Returns the first firing index (-1: none), the window's
    count, total and squared deviations, and its buckets."""
    sz, tt, mm = _buffers(params[2])
    held = len(sizes)
    sz[:held], tt[:held], mm[:held] = sizes, totals, m2s
    hit, held, n, total, variance = _adwin_advance(x, sz, tt, mm, held, n, total, variance, params)
    return hit, n, total, variance, sz[:held].copy(), tt[:held].copy(), mm[:held].copy()


@compiled
def _buffers(max_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room for a histogram's buckets: a level holds at most ``max_buckets + 1`` (for a
    moment), and a window of fewer than ``2**63`` values fills fewer than 64 levels."""
    cap = (max_buckets + 1) * 64
    return np.empty(cap, dtype=np.int64), np.empty(cap), np.empty(cap)


@compiled
def _adwin_advance(
    x: np.ndarray,
    sz: np.ndarray,
    tt: np.ndarray,
    mm: np.ndarray,
    held: int,
    n: int,
    total: float,
    variance: float,
    params: tuple[float, int, int, int, int],
) -> tuple[int, int, int, float, float]:
    """River's ADWIN value by value over ``x``, the first ``held`` buckets of ``sz``, ``tt``,
    ``mm`` (sizes, sums, squared deviations; oldest first) updated in place, up to the first
    firing. Returns its index (-1: none), the buckets held, and the window's count, total and
    squared deviations."""
    delta, clock, max_buckets, mwl, grace_period = params
    for i in range(len(x)):
        v = x[i]
        # Welford's update of the window's sum of squared deviations.
        if n:
            d = v - total / n
            variance += n * d * d / (n + 1)
        n += 1
        total += v
        sz[held], tt[held], mm[held] = 1, v, 0.0
        held = _carry(sz, tt, mm, held + 1, max_buckets)
        if (
            n % clock == 0
            and n > grace_period
            and _cut(sz, tt, held, n, total, variance, delta, mwl)
        ):
            return i, held, n, total, variance
    return -1, held, n, total, variance


@compiled
def _carry(sz: np.ndarray, tt: np.ndarray, mm: np.ndarray, length: int, max_buckets: int) -> int:
    """After a value was appended: while a level holds ``max_buckets + 1`` buckets, merge its
    two oldest into one of the next level (a level's buckets are a run, and the merged bucket
    ends the next level's run where the pair stood). Returns the buckets held."""
    size, end = 1, length
    while True:
        j = end
        while j > 0 and sz[j - 1] == size:
            j -= 1
        if end - j <= max_buckets:
            return length
        w = float(size)
        d = tt[j] / w - tt[j + 1] / w
        # d * d is the square correctly rounded (Python's d ** 2 calls pow(), which is not
        # always: about 1 value in 1,000 differs in the last bit).
        m2 = mm[j] + mm[j + 1] + w * 0.5 * (d * d)
        sz[j], tt[j], mm[j] = 2 * size, tt[j] + tt[j + 1], m2
        for b in range(j + 1, length - 1):  # close the gap the pair's newer one leaves
            sz[b], tt[b], mm[b] = sz[b + 1], tt[b + 1], mm[b + 1]
        length -= 1
        size, end = 2 * size, j + 1


@compiled
def _cut(
    sz: np.ndarray,
    tt: np.ndarray,
    length: int,
    n: int,
    total: float,
    variance: float,
    delta: float,
    mwl: int,
) -> bool:
    """The cut test: does any bucket boundary split the window in two whose means differ by
    more than the bound?"""
    delta_prime = math.log(2.0 * math.log(n) / delta)
    # The bound is sqrt(m_recip * var2 * delta_prime) + linear * m_recip, to the bit what
    # sqrt(2 * m_recip * var * delta_prime) + 2 / 3 * delta_prime * m_recip gives; a cut
    # whose means differ by no more than its second term cannot fire (most cannot).
    var2 = 2.0 * (variance / n)
    linear = 2.0 / 3.0 * delta_prime
    n0, u0 = 0, 0.0
    for b in range(length - 1):
        n0 += sz[b]
        u0 += tt[b]
        n1 = n - n0
        if n0 < mwl or n1 < mwl:
            continue
        m_recip = 1.0 / (n0 - mwl + 1) + 1.0 / (n1 - mwl + 1)
        diff = abs(u0 / n0 - (total - u0) / n1)
        if diff > linear * m_recip and diff > (
            math.sqrt(m_recip * var2 * delta_prime) + linear * m_recip
        ):
            return True
    return False
