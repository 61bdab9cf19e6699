"""Pure statistics: fixed-bin sketches, divergences and drift detectors. No I/O, no clocks.

Everything here takes values and returns values: histograms and bounded counters with
JSON-serialisable, versioned snapshots; the window statistics (PSI, Jensen-Shannon, Hellinger,
binned Kolmogorov-Smirnov and Wasserstein, chi-squared), one registry entry each
(statistics.py), vectorised over many windows; thresholds calibrated to a false-alarm
rate by simulating no-drift windows; river drift detectors behind a small batch interface, plus a
debouncer for their raw firings; the window clock (count or event-time panes, tumbling or
sliding, with a watermark); and a kernel (MMD) two-sample test for joint drift.
"""

from stream_monitor.stats.calibrate import (
    STATISTICS,
    Calibration,
    batch_statistics,
    cached_calibrate,
    calibrate,
    calibration_size,
    share_increase_limit,
)
from stream_monitor.stats.detectors import Debouncer, StreamDetector
from stream_monitor.stats.histogram import (
    BoundedCounter,
    CategoricalHistogram,
    NumericHistogram,
    bin_counts,
    quantile_edges,
    top_categories,
)
from stream_monitor.stats.multivariate import MMDDrift, MMDResult
from stream_monitor.stats.windows import Closure, PaneClock, Segment

__all__ = [
    "STATISTICS",
    "BoundedCounter",
    "Calibration",
    "CategoricalHistogram",
    "Closure",
    "Debouncer",
    "MMDDrift",
    "MMDResult",
    "NumericHistogram",
    "PaneClock",
    "Segment",
    "StreamDetector",
    "batch_statistics",
    "bin_counts",
    "cached_calibrate",
    "calibrate",
    "calibration_size",
    "quantile_edges",
    "share_increase_limit",
    "top_categories",
]
