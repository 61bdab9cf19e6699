"""Tests for monitor.window_detectors: one value per stream and window, as the detectors of
stats.detectors see it fed alone."""

from __future__ import annotations

import numpy as np

from stream_monitor.config import WindowDetectorConfig
from stream_monitor.monitor.window_detectors import WindowDetectors
from stream_monitor.stats.detectors import StreamDetector


def test_feed_is_each_detector_fed_the_window_value_alone() -> None:
    cfg = WindowDetectorConfig(kinds=("page_hinkley", "adwin", "kswin"), min_windows=5)
    wd = WindowDetectors(cfg, ["statistic", "mean"])
    alone = WindowDetectors(cfg, ["statistic", "mean"])  # its detectors fed one by one
    rng = np.random.default_rng(5)
    n = 400
    statistic = np.concatenate(
        [rng.normal(0, 1, n // 2), rng.normal(0, 1, n // 2) + 0.03 * np.arange(n // 2)]
    )
    mean = np.concatenate([rng.normal(0, 1, n // 2), rng.normal(-3, 1, n // 2)])
    fired_at = []
    for i in range(n):
        values = {"statistic": float(statistic[i])}
        if i % 9:
            values["mean"] = float(mean[i])  # a stream may miss a window
        fired = wd.feed(values)
        for key, det in alone.detectors.items():
            stream = key.split("/")[0]
            if stream in values:
                assert isinstance(det, StreamDetector)
                det.update_many(np.array([values[stream]]))
        if fired:
            fired_at.append(i)
    assert fired_at and min(fired_at) >= n // 2  # the rise and the fall, not the stable half
    assert wd.windows == n and wd.last_firing == fired_at[-1] + 1
    assert sum(wd.detections.values()) >= len(fired_at)
    for key, det in wd.detectors.items():
        assert det.snapshot() == alone.detectors[key].snapshot(), key
        assert det.n_seen == (n if key.startswith("statistic") else n - len(range(0, n, 9)))


def test_feed_counts_only_rises_of_upward_streams() -> None:
    wd = WindowDetectors(
        WindowDetectorConfig(kinds=("page_hinkley",), min_windows=3), ["statistic"]
    )
    assert not any(wd.feed({"statistic": 5.0 - 0.2 * i}) for i in range(60))  # a steady fall
    assert wd.detections == {"statistic/page_hinkley": 0}
    assert wd.feed({}) is False and wd.windows == 61  # no value: nothing fed, still a window
