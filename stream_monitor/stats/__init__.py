"""Pure statistics: fixed-bin sketches, divergences and drift detectors. No I/O, no clocks.

Everything here takes values and returns values: histograms and bounded counters with
JSON-serialisable, versioned snapshots; PSI and its no-drift noise floor; Jensen-Shannon,
Hellinger, binned Wasserstein and Kolmogorov-Smirnov distances and a chi-squared homogeneity
test on count vectors; river drift detectors behind a small batch interface, plus a debouncer
for their raw firings.
"""

from stream_monitor.stats.detectors import Debouncer, StreamDetector
from stream_monitor.stats.divergence import (
    chi2_sf,
    chi_squared,
    hellinger,
    jensen_shannon,
    ks_binned,
    psi,
    psi_noise_floor,
    wasserstein_binned,
    wasserstein_scaled,
)
from stream_monitor.stats.histogram import (
    BoundedCounter,
    CategoricalHistogram,
    NumericHistogram,
    bin_counts,
    quantile_edges,
    top_categories,
)

__all__ = [
    "BoundedCounter",
    "CategoricalHistogram",
    "Debouncer",
    "NumericHistogram",
    "StreamDetector",
    "bin_counts",
    "chi2_sf",
    "chi_squared",
    "hellinger",
    "jensen_shannon",
    "ks_binned",
    "psi",
    "psi_noise_floor",
    "quantile_edges",
    "top_categories",
    "wasserstein_binned",
    "wasserstein_scaled",
]
