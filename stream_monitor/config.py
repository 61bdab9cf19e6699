"""Frozen configuration models. The environment and files are read only at the entry point (CLI).

:func:`load_config` layers the sources, each over the one before: the models' defaults, the
TOML file, the environment (``STREAM_MONITOR_`` + the field path joined by ``__``, e.g.
``STREAM_MONITOR_CHECKPOINT__HMAC_KEY`` or ``STREAM_MONITOR_KAFKA__SASL_PASSWORD``), then the
command-line flags. Secrets are ``SecretStr``: they print as ``**********``.

Examples
--------
>>> cfg = MonitorConfig(bootstrap_servers="127.0.0.1:9092")
>>> cfg.topics.predictions, cfg.drift.reference.size
('predictions', 1000)
>>> MonitorConfig.model_validate({"bootstrap_servers": "x:1", "drift": {"window": {"size": 0}}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MonitorConfig
...
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from stream_monitor.errors import ConfigError
from stream_monitor.stats.statistics import default_fixed, default_min_effect
from stream_monitor.stats.statistics import names as statistic_names

__all__ = [
    "ENV_PREFIX",
    "RESERVED_KAFKA_PROPERTIES",
    "AlertRule",
    "AlertsConfig",
    "CheckpointConfig",
    "DetectorConfig",
    "DriftConfig",
    "HealthConfig",
    "KafkaConfig",
    "KafkaSecurity",
    "LabelJoinConfig",
    "LimitsConfig",
    "ModelLabelConfig",
    "MonitorConfig",
    "MultivariateConfig",
    "PerformanceConfig",
    "QualityConfig",
    "ReferenceConfig",
    "ReferenceFile",
    "SegmentsConfig",
    "ThresholdConfig",
    "TopicsConfig",
    "WindowConfig",
    "WindowDetectorConfig",
    "config_from_environment",
    "flatten_kafka",
    "is_secret_property",
    "kafka_property_name",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _replication_factor(n: int) -> int:
    if n == 0 or n < -1:
        raise ValueError("replication factor must be -1 (the broker's default) or at least 1")
    return n


#: Replicas of a topic the monitor creates: -1 takes the broker's ``default.replication.factor``
#: (Kafka >= 2.4), so a production cluster's usual 3 applies without configuration.
ReplicationFactor = Annotated[int, AfterValidator(_replication_factor)]


class TopicsConfig(_Frozen):
    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "alerts"
    dead_letter: str = "stream-monitor-dead-letter"
    #: Retraining triggers (a compact event when a rule with ``retrain = true`` fires); unset,
    #: none are published.
    retrain: str | None = None
    #: Partitions and replication for the output topics the monitor creates when missing
    #: (replication -1: the broker's ``default.replication.factor``).
    output_partitions: int = Field(default=3, ge=1)
    output_replication_factor: ReplicationFactor = -1


class DetectorConfig(_Frozen):
    """Incremental change detectors on every numeric feature (and numeric model output).

    Values reach the detectors after the probability integral transform against the reference,
    standardised (mean ~0, sd ~1 under no drift, bounded), so one setting fits every feature.
    A raw firing never pages by itself: an incident opens only when ``min_agreeing`` different
    detectors fired on the same feature within ``agreement_events`` values of each other.

    Measured on 200,000 stationary N(0,1) values (river 0.26; figures and script:
    load_tests/RESULTS.md, load_tests/detector_false_alarms.py): Page-Hinkley at river's
    defaults (threshold 50, delta 0.005) fired 126 times; at ours (threshold 100, delta 0.05)
    8 times, detecting a 0.5 sd shift ~200 values after it; ADWIN (delta 0.002) fired 0 times
    and detected the same shift after ~135 values (seed 0; median over 5 seeds: 119).
    """

    enabled: bool = True
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    page_hinkley_threshold: float = Field(default=100.0, gt=0)
    page_hinkley_delta: float = Field(default=0.05, ge=0)
    min_agreeing: int = Field(default=2, ge=1, le=2)
    agreement_events: int = Field(default=1000, ge=1)
    #: Firings of one detector closer together than this are one change (river #574).
    cooldown_events: int = Field(default=500, ge=1)


#: The statistics' names, from the registry (stream_monitor/stats/statistics.py).
STATISTIC_NAMES: tuple[str, ...] = statistic_names()


def _known_statistic(name: str) -> str:
    if name not in STATISTIC_NAMES:
        raise ValueError(f"unknown statistic {name!r}; choose from {list(STATISTIC_NAMES)}")
    return name


#: A statistic's name, checked against the registry (stream_monitor/stats/statistics.py).
Statistic = Annotated[str, AfterValidator(_known_statistic)]


class WindowConfig(_Frozen):
    """The windows compared with the reference (see stream_monitor/stats/windows.py).

    ``kind = "count"``: ``size`` and ``slide`` are events of one model. ``kind = "time"``:
    seconds of event time, aligned to the epoch; a window closes when the model's watermark
    (latest event time minus ``allowed_lateness_seconds``) passes its end, and events for an
    already closed window are counted as late (``stream_monitor_model_late_events_total``), not
    binned. ``slide`` unset means tumbling; otherwise ``size`` must be a multiple of ``slide``.
    """

    kind: Literal["count", "time"] = "count"
    size: float = Field(default=1000, gt=0)
    slide: float | None = Field(default=None, gt=0)
    allowed_lateness_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        slide = self.slide if self.slide is not None else self.size
        k = self.size / slide
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError(f"window size {self.size} is not a multiple of slide {slide}")
        if self.kind == "count":
            if self.size != int(self.size) or slide != int(slide):
                raise ValueError("count windows need whole numbers of events")
            if self.size < 10:
                raise ValueError("count windows need at least 10 events")
        return self


class ReferenceConfig(_Frozen):
    """Where each model's reference comes from when no profile file is configured for it.

    ``first_events``: the first ``size`` events of the model (zero configuration). ``rolling``:
    the bins are still learnt from the first ``size`` events, but every window is compared with
    the window that ended ``lag_windows`` windows earlier (for seasonal data: hourly windows with
    ``lag_windows = 24`` compare each hour with the same hour yesterday). Until that history
    exists the first-events reference is used. A profile file (``[[references]]``) replaces the
    first-events reference; ``rolling`` still applies on top of it.
    """

    mode: Literal["first_events", "rolling"] = "first_events"
    size: int = Field(default=1000, ge=10)
    lag_windows: int = Field(default=1, ge=1, le=1000)
    #: A rolling reference with fewer events than this falls back to the fixed reference.
    min_events: int = Field(default=100, ge=1)


class ThresholdConfig(_Frozen):
    """When a window statistic counts as drift.

    ``fixed``: the statistic must exceed ``fixed[statistic]``. ``calibrated``: it must exceed
    both its no-drift quantile at ``false_alarm_rate`` (simulated from the reference for the
    window's actual size, see stats/calibrate.py) and ``min_effect[statistic]``, so a small
    window does not alarm on noise and a huge one does not alarm on a negligible change: the
    score then means the same thing at 1,000 and 1,000,000 events. An incident resolves once
    the statistic falls below ``resolve_ratio`` times the threshold (hysteresis).
    """

    mode: Literal["fixed", "calibrated"] = "calibrated"
    false_alarm_rate: float = Field(default=0.001, gt=0, lt=0.5)
    fixed: dict[str, float] = Field(default_factory=default_fixed)
    min_effect: dict[str, float] = Field(default_factory=default_min_effect)
    resolve_ratio: float = Field(default=0.5, gt=0, lt=1)
    #: Bootstrap draws per calibration; default ``max(2000, 20 / false_alarm_rate)``, so about
    #: 20 simulated windows lie beyond the threshold: its false-alarm rate is then the target
    #: +/- ~22 % (relative). More draws cost proportionally more CPU (one calibration of PSI at
    #: 20,000 draws takes ~0.07 s, once per reference and window-size bucket).
    calibration_draws: int | None = Field(default=None, ge=100)

    def draws(self) -> int:
        if self.calibration_draws is not None:
            return self.calibration_draws
        return max(2000, math.ceil(20 / self.false_alarm_rate))

    @model_validator(mode="after")
    def _check(self) -> ThresholdConfig:
        for d in (self.fixed, self.min_effect):
            unknown = set(d) - set(STATISTIC_NAMES)
            if unknown:
                raise ValueError(f"unknown statistics {sorted(unknown)}")
        return self


class QualityConfig(_Frozen):
    """Data-quality signals, each judged per window against the reference's own rate.

    A signal breaches when the window's rate exceeds the reference's rate by more than the
    ``*_increase`` margin (out-of-range: beyond the ~2/(n+1) expected from a sample's min/max;
    new categories: beyond the Good-Turing estimate of the reference's unseen mass), and clears
    below half that margin.
    """

    missing_increase: float = Field(default=0.1, gt=0, le=1)
    #: A field absent (not merely null) from this much more of the window than of the reference:
    #: the field disappeared from the payload (schema drift).
    absent_increase: float = Field(default=0.5, gt=0, le=1)
    type_error_increase: float = Field(default=0.01, gt=0, le=1)
    out_of_range_increase: float = Field(default=0.05, gt=0, le=1)
    new_category_increase: float = Field(default=0.05, gt=0, le=1)
    sentinel_increase: float = Field(default=0.05, gt=0, le=1)
    #: Values that stand for "unknown" in many pipelines; a jump in their share is a fault.
    sentinels: tuple[float, ...] = (-1.0, -999.0, -9999.0, -99999.0, 999.0, 9999.0, 999999.0)
    #: Events carrying fields unknown to the reference, as a share of the window (new fields).
    unexpected_field_ratio: float = Field(default=0.05, gt=0, le=1)


class WindowDetectorConfig(_Frozen):
    """Change detectors on per-window streams, for drifts too slow for any single window.

    Per feature they see the alerting statistic of each window as a z-score against its
    no-drift distribution (mean 0, sd 1 when stable), and for numeric features the window's
    standardised mean (``sqrt(n)`` times the mean PIT score, also ~N(0, 1) when stable).
    """

    enabled: bool = True
    kinds: tuple[Literal["page_hinkley", "adwin", "kswin"], ...] = ("page_hinkley", "adwin")
    page_hinkley_threshold: float = Field(default=25.0, gt=0)
    page_hinkley_delta: float = Field(default=0.5, ge=0)
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    #: Windows fed before a firing counts (the detectors' warm-up).
    min_windows: int = Field(default=10, ge=1)
    #: A feature's window-detector incident clears this many windows after the last firing.
    clear_after_windows: int = Field(default=5, ge=1)


class MultivariateConfig(_Frozen):
    """Joint drift of a model's numeric features (MMD on bounded samples, in PIT space).

    Off by default: it costs a kernel matrix of ``(reference_sample + window_sample)**2``
    entries times ``permutations`` per closed window (load_tests/RESULTS.md, "multivariate").
    Enable it for models where correlations matter (a broken join upstream, a swapped column).
    """

    enabled: bool = False
    reference_sample: int = Field(default=512, ge=10, le=10_000)
    window_sample: int = Field(default=256, ge=10, le=10_000)
    permutations: int = Field(default=200, ge=20, le=10_000)
    #: A window breaches when its permutation p-value is below this; it can be no smaller than
    #: ``1 / (permutations + 1)``, the smallest p-value the permutations can give.
    p_value: float = Field(default=0.01, gt=0, lt=0.5)
    #: At most this many numeric features (the first discovered or profiled) enter the test.
    #: A global kernel test is weak for a change confined to a few of many columns.
    max_features: int = Field(default=20, ge=2, le=200)

    @model_validator(mode="after")
    def _check(self) -> MultivariateConfig:
        if self.p_value < 1.0 / (self.permutations + 1):
            raise ValueError(
                f"p_value {self.p_value} is below 1/(permutations+1): raise permutations"
            )
        return self


class DriftConfig(_Frozen):
    reference: ReferenceConfig = ReferenceConfig()
    window: WindowConfig = WindowConfig()
    n_bins: int = Field(default=10, ge=2, le=100)
    top_k_categories: int = Field(default=20, ge=1, le=1000)
    #: Statistics computed for every window and exported on /metrics.
    statistics: tuple[Statistic, ...] = STATISTIC_NAMES
    #: Statistics whose thresholds open incidents (each must be in ``statistics``).
    alert_statistics: tuple[Statistic, ...] = ("psi",)
    thresholds: ThresholdConfig = ThresholdConfig()
    quality: QualityConfig = QualityConfig()
    detectors: DetectorConfig = DetectorConfig()
    window_detectors: WindowDetectorConfig = WindowDetectorConfig()
    multivariate: MultivariateConfig = MultivariateConfig()
    #: Feature importance per model id (``"*"``: every model) for the model-level drift score;
    #: unlisted features weigh 1.
    importance: dict[str, dict[str, float]] = {}
    #: The model-level signal breaches when the importance-weighted share of drifting features
    #: reaches this.
    model_score_threshold: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> DriftConfig:
        missing = set(self.alert_statistics) - set(self.statistics)
        if missing:
            raise ValueError(f"alert_statistics {sorted(missing)} are not in statistics")
        if self.thresholds.mode == "fixed":
            nofixed = set(self.alert_statistics) - set(self.thresholds.fixed)
            if nofixed:
                raise ValueError(f"no fixed threshold for alert statistics {sorted(nofixed)}")
        return self

    def weight(self, model_id: str, feature: str) -> float:
        for key in (model_id, "*"):
            w = self.importance.get(key, {}).get(feature)
            if w is not None:
                return w
        return 1.0


class ReferenceFile(_Frozen):
    """A reference profile built by ``stream-monitor profile`` for one model (and version)."""

    model_id: str
    #: Unset: any version of the model without a profile of its own.
    model_version: str | None = None
    path: Path


class ModelLabelConfig(_Frozen):
    """How long one model's predictions wait for labels (clicks: minutes; fraud: weeks)."""

    ttl_seconds: float = Field(gt=0)
    #: At most this many of the model's predictions wait (oldest evicted first, counted).
    capacity: int = Field(default=200_000, ge=1)


ConceptDetector = Literal["adwin", "page_hinkley", "ddm", "eddm", "hddm_a", "hddm_w"]


class LabelJoinConfig(_Frozen):
    #: Predictions wait this long (event time of their model) for their label, then expire.
    ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: At most this many predictions wait per partition; when full, the model holding the
    #: most loses its oldest first.
    capacity: int = Field(default=200_000, ge=1)
    #: Per-model TTL and capacity, by model id.
    models: dict[str, ModelLabelConfig] = {}
    #: A prediction this far ahead of its model's newest event time does not move the
    #: model's watermark (a wrong clock would otherwise expire every waiting prediction); nor
    #: does a label read before its prediction move the early labels' watermark.
    max_future_seconds: float = Field(default=3600.0, gt=0)
    #: A labels partition more than this far ahead (event time) of its predictions partition
    #: is paused until the predictions catch up (see Application._align).
    align_seconds: float = Field(default=10.0, gt=0)
    #: Labels read before their prediction wait this long (label event time) for it ...
    early_grace_seconds: float = Field(default=600.0, ge=0)
    #: ... and at most this many wait per partition (oldest evicted first, counted).
    early_capacity: int = Field(default=20_000, ge=1)
    error_adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    #: Labelled events forming the baseline error before drift on errors is judged.
    baseline_size: int = Field(default=500, ge=10)
    #: An error increase must exceed the baseline by this fraction to open an incident.
    min_relative_increase: float = Field(default=0.25, gt=0)
    #: Concept-drift detectors on the error stream (0/1 errors for classifiers, absolute errors
    #: for regressors; ddm and eddm need 0/1 errors and are skipped for regressors). Firings of
    #: different detectors within ``cooldown_errors`` of each other are one change.
    detectors: tuple[ConceptDetector, ...] = ("adwin",)
    #: Per-model choice of detectors, by model id.
    model_detectors: dict[str, tuple[ConceptDetector, ...]] = {}
    cooldown_errors: int = Field(default=500, ge=1)


class PerformanceConfig(_Frozen):
    """Windowed performance once labels arrive, by the prediction's event time.

    ``window`` works as for drift, over labelled predictions. For time windows,
    ``allowed_lateness_seconds`` is how long a window waits for its late labels before it is
    judged (labels for a judged window are counted as late): minutes for clicks, the label TTL
    for exact but slow figures. Count windows (the default) close every ``size`` labels.
    A window breaches when its main metric is worse than the baseline (the mean of the first
    ``baseline_windows`` windows) by more than ``max_relative_change``.
    """

    enabled: bool = True
    window: WindowConfig = WindowConfig()
    classification_metric: Literal[
        "accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss", "brier"
    ] = "accuracy"
    regression_metric: Literal["mae", "rmse", "mape", "r2"] = "mae"
    baseline_windows: int = Field(default=3, ge=1)
    max_relative_change: float = Field(default=0.1, gt=0)
    #: Classes tracked per model (the rest share one "(other)" class, counted).
    max_classes: int = Field(default=20, ge=2, le=200)
    #: Proxy before labels: a prediction whose score is below this is low-confidence.
    low_confidence: float = Field(default=0.6, gt=0, lt=1)
    #: The low-confidence share of a window may exceed the first window's by this much, and by
    #: the margin of a two-proportion z-test at ``drift.thresholds.false_alarm_rate`` (unless
    #: thresholds are fixed): the larger of the two.
    low_confidence_increase: float = Field(default=0.1, gt=0, le=1)


class SegmentsConfig(_Frozen):
    """Drift and performance per segment and per model version, and fairness between segments.

    Each key in ``keys`` (from the event's ``segments``) splits a model into one monitor per
    value, at most ``max_values`` per key: later values share ``<key>=(other)`` (counted). With
    ``by_version``, ``model_version`` is one more key, so a canary or shadow version is judged
    on its own, over the same period as the current one. Every segment monitor does what the
    whole-model monitor does (its own reference, windows, data quality, performance, concept
    drift) and its alerts carry ``segment = "key=value"``. Cost: each event is processed once
    for the model and once per key.

    Fairness (classifiers): per segment, the positive-prediction rate, true-positive rate and
    false-positive rate of each performance window, and their ratios to the whole model's (or,
    with ``fairness_reference[key] = value``, to that reference segment's). The
    ``disparate_impact`` (positive-rate ratio) and ``tpr_ratio`` signals breach below
    ``min_ratio`` (the four-fifths rule) and clear above ``(1 + min_ratio) / 2``.

    Version comparison (whenever ``by_version`` is on): in every window, each version's
    predictions are compared with those of the baseline version *in the same window*
    (``version_psi`` on ``prediction.score`` / ``prediction.label``, threshold calibrated under
    "both versions' outputs come from one distribution") and, once labels arrive, its main
    performance metric (``version_relative_change``, positive = worse than the baseline,
    breaching above ``performance.max_relative_change``). ``baseline_version`` names the version
    the others are compared with. Unset, the baseline is the version with the most events
    (labelled pairs for performance) in a window, normally the production version, and it
    stays the baseline while it has at least ``version_min_events`` in each window, so a 50/50
    split or a ramp-up does not swap the roles from one window to the next. A version with
    fewer than ``version_min_events`` events (or labelled pairs) in a window, or a baseline with
    fewer, is not compared in that window. At most ``max_values`` versions are compared; the
    events of later versions are counted, not compared.
    """

    keys: tuple[str, ...] = ()
    max_values: int = Field(default=20, ge=1, le=1000)
    by_version: bool = False
    fairness_reference: dict[str, str] = {}
    min_ratio: float = Field(default=0.8, gt=0, lt=1)
    #: The version others are compared with; None: the one with the most events (sticky).
    baseline_version: str | None = None
    #: A version (or baseline) with fewer events or labelled pairs in a window is not compared.
    version_min_events: int = Field(default=100, ge=1)

    @property
    def all_keys(self) -> tuple[str, ...]:
        return (*self.keys, "model_version") if self.by_version else self.keys


AlertAction = Literal[
    "investigate_data_pipeline", "retrain", "roll_back", "check_labels", "investigate"
]


class AlertRule(_Frozen):
    """Which observations a rule judges, how, and where its alerts go.

    A rule matches an observation by glob patterns (``fnmatch``) on the model, kind, feature,
    signal and segment; the first matching rule of ``alerts.rules`` judges it, and observations
    no rule matches are judged by the default rule (the monitor's own thresholds, severity by
    kind). ``mode``:

    - ``calibrated``: the monitor's own verdict (calibrated drift thresholds, the performance
      baseline, ...); ``threshold`` is not used.
    - ``absolute``: the value against ``threshold`` (``direction`` ``above`` or ``below``);
      it clears past ``resolve_threshold`` (default: the threshold moved back by
      ``1 - alerts.resolve_ratio`` of its size, so 0.9 for 1.0 above, 0.77 for 0.7 below).
    - ``relative``: the relative change of the value from its baseline (the reference mean of a
      feature's ``mean`` signal, a performance metric's baseline): ``(value - baseline) /
      |baseline|``, against ``threshold`` in the ``direction`` (``both`` compares its size).

    ``for_windows`` consecutive breaching observations and ``for_seconds`` of event time in
    breach are both needed before an incident fires (until then it is *pending*).
    ``enabled = false`` silences what the rule matches.

    Examples
    --------
    >>> r = AlertRule(name="precision", kind="performance", signal="precision:1",
    ...               mode="absolute", threshold=0.7, direction="below", for_windows=2)
    >>> r.matches("fraud", "performance", None, "precision:1", None)
    True
    """

    name: str = Field(min_length=1)
    models: tuple[str, ...] = ("*",)
    kind: str = "*"
    feature: str = "*"
    signal: str = "*"
    #: ``*`` matches the whole model and every segment; ``""`` only the whole model.
    segment: str = "*"
    mode: Literal["calibrated", "absolute", "relative"] = "calibrated"
    threshold: float | None = None
    resolve_threshold: float | None = None
    direction: Literal["above", "below", "both"] = "above"
    for_windows: int = Field(default=1, ge=1)
    for_seconds: float = Field(default=0.0, ge=0)
    cooldown_seconds: float | None = Field(default=None, ge=0)
    severity: Literal["critical", "warning", "info"] | None = None
    labels: dict[str, str] = {}
    action: AlertAction | None = None
    retrain: bool = False
    enabled: bool = True

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if self.mode != "calibrated" and self.threshold is None:
            raise ValueError(f"rule {self.name!r}: mode {self.mode!r} needs a threshold")
        if self.mode == "absolute" and self.direction == "both":
            raise ValueError(f"rule {self.name!r}: direction 'both' is for relative rules")
        return self

    def matches(
        self,
        model_id: str,
        kind: str,
        feature: str | None,
        signal: str,
        segment: str | None,
    ) -> bool:
        if segment is None:
            seg_ok = self.segment in ("*", "")
        else:
            seg_ok = self.segment != "" and _glob(segment, self.segment)
        return (
            seg_ok
            and _glob(kind, self.kind)
            and _glob(signal, self.signal)
            and _glob(feature or "", self.feature)
            and any(_glob(model_id, m) for m in self.models)
        )


def _glob(value: str, pattern: str) -> bool:
    """An exact match, or a ``fnmatch`` glob (``*``, ``?``, ``[seq]``)."""
    from fnmatch import fnmatchcase

    return value == pattern or fnmatchcase(value, pattern)


class AlertsConfig(_Frozen):
    """The alert lifecycle: rules, grouping, hysteresis and cooldown (see docs/alerts.md).

    An incident is *pending* while its rule's ``for_windows`` / ``for_seconds`` are not yet met,
    then *firing* (one ``firing`` event), then *resolved* (one ``resolved`` event) once every
    signal of it has cleared its resolve threshold. After a resolution the same incident may not
    fire again for ``cooldown_seconds`` of event time: a value hovering at the threshold makes
    one alert, not one per window. With ``group_features`` the features of a model share one
    incident per kind (and segment), listed in the alert with the model drift score. An incident
    whose signals all fall silent for ``stale_seconds`` resolves. A firing incident whose
    features or kinds of signals change publishes an ``updated`` event, at most one per
    ``update_interval_seconds`` of event time.
    """

    rules: tuple[AlertRule, ...] = ()
    group_features: bool = True
    cooldown_seconds: float = Field(default=3600.0, ge=0)
    #: Resolve thresholds of ``absolute`` / ``relative`` rules without ``resolve_threshold``:
    #: the threshold moved back by ``1 - resolve_ratio`` of its size.
    resolve_ratio: float = Field(default=0.9, gt=0, le=1)
    #: Signals listed in an alert at most (the strongest; ``signals_total`` counts them all).
    max_signals: int = Field(default=10, ge=1, le=1000)
    #: An open incident none of whose signals was judged for this long, in event time of its
    #: model and kind, resolves (a retired version or segment, a removed or disabled rule, a
    #: signal no longer measurable), so every ``firing`` event gets its ``resolved``. None keeps
    #: such incidents open. Set it above the longest window of the signals alerted on.
    stale_seconds: float | None = Field(default=7 * 86400.0, gt=0)
    #: A firing incident whose signals change (a feature or a signal kind joins or clears)
    #: publishes an ``updated`` event, at most one per this much event time per incident (a
    #: flapping signal cannot page-storm). None sends no ``updated`` events.
    update_interval_seconds: float | None = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup or "default" in names:
            raise ValueError(f"rule names must be unique and not 'default': {dup or ['default']}")
        return self


class LimitsConfig(_Frozen):
    """Bounds that keep state and metric series finite whatever the input."""

    max_models_per_partition: int = Field(default=50, ge=1)
    #: A model without a prediction for this long (event time, measured on its partition's
    #: clock: the newest prediction of its other models, as the label join keeps it) is
    #: forgotten: its state,
    #: its series and its slot among ``max_models_per_partition`` go, its firing incidents
    #: resolve. None keeps every model for ever.
    model_idle_seconds: float | None = Field(default=7 * 86400.0, gt=0)
    max_features_per_model: int = Field(default=100, ge=1)
    max_event_bytes: int = Field(default=1_048_576, ge=1024)


class KafkaSecurity(_Frozen):
    """``[security]``, kept for existing files: ``[kafka]`` takes any librdkafka property and
    wins where both set one. ``sasl_password_file`` reads the password from a file."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def client_config(self) -> dict[str, str]:
        out = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            out["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            out["sasl.username"] = self.sasl_username
        if self.sasl_password:
            out["sasl.password"] = self.sasl_password.get_secret_value()
        return out


#: librdkafka property names that really contain an underscore (every other ``_`` in a key of
#: ``[kafka]`` reads as a dot, so that ``STREAM_MONITOR_KAFKA__SASL_PASSWORD`` names
#: ``sasl.password``).
_UNDERSCORE_PROPERTIES = frozenset({"log_level"})
#: Set per client by the monitor: the group, the transactional id and the delivery guarantee
#: depend on them (``group_id``, ``instance_id``, ``processing_guarantee``).
RESERVED_KAFKA_PROPERTIES = frozenset(
    {
        "group.id",
        "group.instance.id",
        "transactional.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "isolation.level",
        "enable.idempotence",
        # Range assignment keeps a model's predictions and labels on one instance.
        "partition.assignment.strategy",
    }
)
_MAX_KAFKA_PROPERTIES = 500

KafkaValue = str | int | float | bool


def is_secret_property(name: str) -> bool:
    """Whether the librdkafka property ``name`` holds a secret (kept as ``SecretStr``).

    >>> [is_secret_property(n) for n in ("sasl.password", "ssl.key.pem", "ssl.ca.location")]
    [True, True, False]
    """
    return (
        any(w in name for w in ("password", "secret", "passphrase"))
        or name.endswith("key.pem")
        or name == "sasl.oauthbearer.config"
    )


def kafka_property_name(key: str) -> str:
    """The librdkafka property a key of ``[kafka]`` names: lower case, ``_`` read as ``.``.

    >>> kafka_property_name("SASL_PASSWORD"), kafka_property_name("log_level")
    ('sasl.password', 'log_level')
    """
    k = key.strip().lower()
    return k if k in _UNDERSCORE_PROPERTIES else k.replace("_", ".")


def flatten_kafka(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[kafka]`` as flat librdkafka properties: nested tables (``ssl.ca.location = ...`` in
    TOML, ``KAFKA__SSL__CA__LOCATION`` in the environment) joined by dots.

    >>> flatten_kafka({"security": {"protocol": "SSL"}, "sasl_username": "u", "log_level": 3})
    {'security.protocol': 'SSL', 'sasl.username': 'u', 'log_level': 3}
    """
    out: dict[str, Any] = {}
    for key, value in section.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"[kafka]: invalid property name {key!r}")
        name = prefix + kafka_property_name(key)
        if isinstance(value, Mapping):
            out.update(flatten_kafka(value, name + "."))
        else:
            out[name] = value
        if len(out) > _MAX_KAFKA_PROPERTIES:
            raise ValueError(f"[kafka]: more than {_MAX_KAFKA_PROPERTIES} properties")
    return out


def _is_split(section: Mapping[str, Any]) -> bool:
    return set(section) <= {"properties", "secrets"} and all(
        isinstance(v, Mapping) for v in section.values()
    )


class KafkaConfig(_Frozen):
    """``[kafka]``: librdkafka properties for every client the monitor creates.

    Any librdkafka property (``security.protocol``, ``ssl.*``, ``sasl.*``,
    ``sasl.oauthbearer.*``, ``client.id``, ...) given here reaches the consumers, the producers
    (the transactional one too), the admin client, the changelog and replay readers, and the
    ``simulate``, ``alerts`` and ``forward`` commands. Keys may be flat (``"ssl.ca.location"``)
    or TOML dotted keys (``ssl.ca.location = ...``, the same thing); ``_`` reads as ``.``.
    ``bootstrap.servers`` here is the top-level ``bootstrap_servers``. Secret properties
    (passwords, ``*.secret``, private keys) are kept as ``SecretStr``; ``<property>.file``
    (``sasl.password.file``) reads a property from a file when the configuration is loaded.
    ``consumer_overrides`` / ``producer_overrides`` still apply on top, to consumers /
    producers only, and the legacy ``[security]`` table below this one.

    Examples
    --------
    >>> k = KafkaConfig.model_validate({"security.protocol": "SASL_SSL",
    ...                                 "sasl": {"username": "u", "password": "p"}})
    >>> k
    KafkaConfig(properties={'security.protocol': 'SASL_SSL', 'sasl.username': 'u'}, \
secrets={'sasl.password': SecretStr('**********')})
    >>> k.client_config()["sasl.password"]
    'p'
    """

    properties: dict[str, KafkaValue] = {}
    secrets: dict[str, SecretStr] = {}

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or _is_split(data):
            return data
        props: dict[str, Any] = {}
        secrets: dict[str, Any] = {}
        for name, value in flatten_kafka(data).items():
            if name == "bootstrap.servers":
                raise ValueError("[kafka]: set bootstrap_servers (top level) instead")
            if name in RESERVED_KAFKA_PROPERTIES:
                raise ValueError(
                    f"[kafka]: {name!r} is set by the monitor (group_id, instance_id, "
                    "processing_guarantee); consumer_overrides/producer_overrides can force it"
                )
            if name.endswith(".file"):
                raise ValueError(f"[kafka]: {name!r} is read by load_config, not here")
            if not isinstance(value, str | int | float | bool | SecretStr):
                raise ValueError(f"[kafka]: {name!r} must be a string, a number or a boolean")
            if is_secret_property(name):
                secrets[name] = value if isinstance(value, SecretStr) else str(value)
            else:
                props[name] = value
        return {"properties": props, "secrets": secrets}

    def client_config(self) -> dict[str, Any]:
        """The properties, secrets revealed: only for building a client, never for printing."""
        return {
            **self.properties,
            **{k: v.get_secret_value() for k, v in self.secrets.items()},
        }


class CheckpointConfig(_Frozen):
    """Per-partition state checkpoints in a compacted changelog topic (see checkpoint.py).

    On by default: the state is plain data (JSON, validated when read back, never unpickled),
    so a restart or a rebalance resumes every model where it was. ``hmac_key`` (at least 32
    bytes) signs the snapshots with HMAC-SHA256 over the group, the partition and a sequence
    number, and then nothing unsigned or forged is loaded; without it they are unsigned.
    ``enabled = false`` turns the changelog off (a restart re-learns the references).
    """

    enabled: bool = True

    #: A checkpoint is taken (and, with exactly-once, the transaction committed) after this
    #: long or this many input records, whichever comes first. It bounds alert latency under
    #: exactly-once, since alerts become visible when their transaction commits. The count
    #: bounds what a crash replays, the label join's undo journal (an entry per prediction
    #: stored or removed since the last checkpoint), and how long a checkpoint holds up the
    #: loop: it writes what changed since the last one, every waiting prediction that arrived
    #: meanwhile included. 250,000 made drains 3-5 % faster, but the live p99 lag of
    #: predictions that never get a label 0.58-1.13 s instead of 0.22-0.53 s
    #: (load_tests/RESULTS.md).
    interval_seconds: float = Field(default=5.0, gt=0)
    interval_events: int = Field(default=50_000, ge=1)
    hmac_key: SecretStr | None = None
    #: Default: ``<group_id>-changelog``.
    topic: str | None = None
    #: -1: the broker's ``default.replication.factor``.
    replication_factor: ReplicationFactor = -1
    restore_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Timeout of each transactional call; one that blocks for twice this long makes the
    #: monitor replace its producer and rewind to the last checkpoint.
    commit_timeout_seconds: float = Field(default=30.0, gt=0)


class HealthConfig(_Frozen):
    """``/healthz`` (liveness): it answers 503 when the processing loop has not completed a
    cycle for ``max_loop_stall_seconds``, beyond the time the step under way may take by its
    own timeouts (a checkpoint: ``checkpoint.commit_timeout_seconds``; a restore on assignment:
    ``checkpoint.restore_timeout_seconds``), so a slow checkpoint or batch stays healthy and a
    stuck loop is restarted by its liveness probe."""

    max_loop_stall_seconds: float = Field(default=60.0, gt=0)


class MonitorConfig(_Frozen):
    # Validation errors name the field and the rule, never the rejected value: it may be a
    # secret (a password given as a number, a [kafka] table holding one).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    bootstrap_servers: str
    group_id: str = "stream-monitor"
    #: ``exactly_once`` needs a broker with transactions (Kafka >= 2.5 for the group-fenced
    #: producer); ``at_least_once`` publishes alerts without waiting for a checkpoint.
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    #: Stable per instance (a StatefulSet pod name, say): it names the transactional producer,
    #: so a restarted instance fences its predecessor at once. Default: the host name.
    instance_id: str | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    topics: TopicsConfig = TopicsConfig()
    #: The format of the input records' values, by name in events/decode.py's DESERIALIZERS
    #: (``json``: one UTF-8 JSON object per record, docs/wire-contract.md).
    input_format: str = "json"
    drift: DriftConfig = DriftConfig()
    references: tuple[ReferenceFile, ...] = ()
    labels: LabelJoinConfig = LabelJoinConfig()
    performance: PerformanceConfig = PerformanceConfig()
    segments: SegmentsConfig = SegmentsConfig()
    alerts: AlertsConfig = AlertsConfig()
    limits: LimitsConfig = LimitsConfig()
    health: HealthConfig = HealthConfig()
    #: librdkafka properties for every client (security, timeouts, client.id, ...).
    kafka: KafkaConfig = KafkaConfig()
    security: KafkaSecurity = KafkaSecurity()
    #: Records one consume call waits for (at most ``batch_timeout_seconds``).
    batch_size: int = Field(default=2000, ge=1)
    batch_timeout_seconds: float = Field(default=0.5, gt=0)
    #: When a consume call returns a full ``batch_size`` (a backlog), the records the client
    #: has already fetched join the same batch, without waiting, up to this many: the
    #: per-batch work is shared by more records while draining, and live input (small
    #: batches) waits no longer. At most ``batch_size`` makes every batch one consume call.
    batch_max_records: int = Field(default=10_000, ge=1)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    #: Extra librdkafka settings for consumers / producers only, over ``[kafka]`` and the
    #: monitor's own per-client settings.
    consumer_overrides: dict[str, Any] = {}
    producer_overrides: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _lift_bootstrap(cls, data: Any) -> Any:
        """``[kafka] bootstrap.servers`` is ``bootstrap_servers``."""
        if not isinstance(data, Mapping):
            return data
        section = data.get("kafka")
        if not isinstance(section, Mapping) or _is_split(section):
            return data
        flat = flatten_kafka(section)
        servers = flat.pop("bootstrap.servers", None)
        if servers is None:
            return data
        if data.get("bootstrap_servers") not in (None, servers):
            raise ValueError("bootstrap_servers and [kafka] bootstrap.servers differ: set one")
        return {**data, "bootstrap_servers": servers, "kafka": flat}


#: Environment variables naming configuration fields start with this.
ENV_PREFIX = "STREAM_MONITOR_"
_MAX_SECRET_FILE_BYTES = 1024 * 1024


class _EnvFields(MonitorConfig, BaseSettings):
    """MonitorConfig's fields as pydantic-settings reads them from the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        frozen=True,
        extra="forbid",
    )


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_EnvFields)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items()}


def config_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration the environment sets, as nested data (not validated yet).

    ``STREAM_MONITOR_<FIELD>``, nested fields joined by ``__`` (any case); lists and tables
    as JSON. Variables naming no field are ignored.

    >>> config_from_environment({"STREAM_MONITOR_TOPICS__ALERTS": "pages",
    ...                          "STREAM_MONITOR_KAFKA__SASL_USERNAME": "u", "HOME": "/root"})
    {'topics': {'alerts': 'pages'}, 'kafka': {'sasl_username': 'u'}}
    """
    try:
        return dict(_Environment(environ)())
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}") from None


def _read_secret_file(path: str | Path, what: str) -> str:
    """A secret from a file (at most 1 MiB of UTF-8; the trailing newline removed)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{what}: {path} is larger than {_MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from None


def _secret_from_file(
    section: dict[str, Any], key: str, file_key: str, base: Path | None, what: str
) -> None:
    path = section.pop(file_key, None)
    if path is None:
        return
    if key in section:
        raise ConfigError(f"{what}: set {key} or {file_key}, not both")
    if not isinstance(path, str):
        raise ConfigError(f"{what}: {file_key} must be a path")
    full = Path(path) if base is None else base / path
    section[key] = _read_secret_file(full, f"{what}.{file_key}")


def _layer(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """One source's data with ``[kafka]`` flattened, its ``bootstrap.servers`` lifted to the
    top level and the ``*_file`` secrets read (relative paths from ``base``)."""
    out = dict(data)
    kafka = out.get("kafka")
    if isinstance(kafka, Mapping) and not _is_split(kafka):
        try:
            flat = flatten_kafka(kafka)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for file_key in [k for k in flat if k.endswith(".file")]:
            _secret_from_file(flat, file_key[: -len(".file")], file_key, base, "kafka")
        servers = flat.pop("bootstrap.servers", None)
        if servers is not None:
            if out.get("bootstrap_servers") not in (None, servers):
                raise ConfigError("bootstrap_servers and [kafka] bootstrap.servers differ")
            out["bootstrap_servers"] = servers
        out["kafka"] = flat
    for name, key in (("security", "sasl_password"), ("checkpoint", "hmac_key")):
        section = out.get(name)
        if isinstance(section, Mapping) and f"{key}_file" in section:
            out[name] = dict(section)
            _secret_from_file(out[name], key, f"{key}_file", base, name)
    return out


def _merge(low: dict[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, tables merged key by key (lists and values replaced)."""
    out = dict(low)
    for k, v in high.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None,
    *,
    defaults: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> MonitorConfig:
    """The configuration from its sources, each over the one before: the models' defaults,
    ``defaults`` (top-level values), the TOML file at ``path`` (optional), the environment
    ``environ`` (``STREAM_MONITOR_*``, see :func:`config_from_environment`; None reads none:
    the CLI passes ``os.environ``), then the command-line ``overrides`` that are not None.

    Tables merge key by key. Relative ``[[references]]`` and ``*_file`` paths of the file are
    taken relative to its folder. Secrets may come from files read here: ``[kafka]
    <property>.file`` (``sasl.password.file``), ``[security] sasl_password_file`` and
    ``[checkpoint] hmac_key_file``. Raises ``ConfigError`` for an unreadable secret file and
    pydantic's ``ValidationError`` for invalid values.
    """
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        with open(path, "rb") as fh:
            from_file = tomllib.load(fh)
        # Profile paths are relative to the configuration file, like includes elsewhere.
        base = Path(path).resolve().parent
        refs = from_file.get("references")
        if isinstance(refs, list):
            from_file["references"] = [
                {**r, "path": str(base / r["path"])}
                if isinstance(r, dict) and isinstance(r.get("path"), str)
                else r
                for r in refs
            ]
        data = _merge(data, _layer(from_file, base))
    if environ is not None:
        data = _merge(data, _layer(config_from_environment(environ), None))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return MonitorConfig.model_validate(data)
