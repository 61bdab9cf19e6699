"""How large a number the statistics take as it is.

Every numeric input (feature values, predicted scores and values, true labels) counts as at
most ``MAX_MAGNITUDE`` in magnitude in every sum, square and moment: a value of 1e308 is
finite, but its square, or the sum of two of them, is not, and one infinity in a running sum
would make every later window's statistic (and the state's JSON snapshot) useless. With the
bound, sums of squares of a hundred million values stay finite (1e200 each).

>>> import numpy as np
>>> clip_magnitude(np.array([1.7e308, -3.0, -1.7e308, np.nan]))
array([ 1.e+100, -3.e+000, -1.e+100,      nan])
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_MAGNITUDE", "clip_magnitude"]

MAX_MAGNITUDE = 1e100


def clip_magnitude(values: np.ndarray) -> np.ndarray:
    """``values`` (floats) with magnitudes above :data:`MAX_MAGNITUDE` brought down to it, in
    place; NaN stays NaN."""
    return np.clip(values, -MAX_MAGNITUDE, MAX_MAGNITUDE, out=values)
