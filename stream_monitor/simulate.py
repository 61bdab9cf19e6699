"""Synthetic prediction and label traffic: the demo, the end-to-end tests and the load benchmark.

The module has two parts:

* :class:`TrafficGenerator` -- deterministic and pure (no I/O). For a seed it yields the same
  :class:`Record` objects (topic, key, value, event time) every time: prediction events for a
  few models and, a few seconds of event time later, the label events that join them.
* :func:`run_simulation` -- produces those records to Kafka through anything shaped like a
  ``confluent_kafka.Producer``, optionally paced to a wall-clock rate.

Model archetypes
----------------
A model name selects one of three archetypes (an unknown name takes the archetype of a known
prefix, e.g. ``"fraud-detector-eu"``, else cycles through the three by position):

``fraud-detector``
    Binary classifier, ``prediction = {"label": 0 | 1, "score": P(fraud)}`` (label 1 iff
    score >= 0.5; ~3 % positives before drift, ~15 % after). Features ``amount``
    (lognormal, median ~33), ``customer_age`` (normal 41 +/- 13, integer, 18..95),
    ``is_international`` (bool, ~12 %), ``country`` (weighted list of 10) and ``device``
    (``ios``/``android``/``web``). Segment ``region`` follows the country.
``churn-model``
    Classifier with string classes, ``prediction = {"label": "stay" | "churn", "score": float}``
    where the score is the probability of the predicted class (always >= 0.5).
    Features ``tenure_days`` (normal 540 +/- 180, integer, >= 0), ``monthly_spend`` (lognormal),
    ``support_tickets`` (Poisson 1.3), ``plan`` (``basic``/``standard``/``premium``),
    ``device`` and ``country``. Segment ``region`` follows the country.
``eta-regressor``
    Regression, ``prediction`` is the ETA in minutes (a number). Features ``distance_km``
    (lognormal, median ~4.5), ``hour_of_day`` (integer, daytime-weighted), ``traffic_index``
    (Beta(2, 5)), ``vehicle`` (``car``/``scooter``/``bike``) and ``weather``. Segment
    ``region`` is drawn independently.

Every feature value is ``null`` with probability :data:`NULL_RATE` (1 %), independently.

Ground truth and drift
----------------------
Labels come from a ground-truth rule around the model's own decision: before drift a
classifier's true class equals its predicted class with probability 0.9 (accuracy ~90 %), and a
regression target is the prediction plus N(0, 3 min) noise (clipped at 1 minute).

From global event index ``drift_at`` on (counted over all models, 0-based), every model gets
exactly one shifted numeric feature (:data:`DRIFTED_FEATURE`) plus concept drift:

* ``fraud-detector``: ``amount`` is multiplied by 3; accuracy drops to ~60 %.
* ``churn-model``: ``tenure_days`` mean shifts by +2 std (+360 days); accuracy drops to ~60 %.
* ``eta-regressor``: ``distance_km`` is multiplied by 2; the target noise std triples
  (3 -> 9 minutes), so the absolute error is ~3x.

All other features (:data:`STABLE_FEATURES`) keep their distribution exactly -- in fact the same
values as with ``drift_at=None`` for the same seed, because drift is applied on top of the same
random draws. The prediction distribution *does* move, since the model reacts to the shifted
feature.

Examples
--------
>>> gen = TrafficGenerator(seed=1, drift_at=None)
>>> recs = list(gen.events(200))
>>> sum(r.topic == "predictions" for r in recs)
200
>>> ev = orjson.loads(recs[0].value)
>>> sorted(ev)
['event_id', 'features', 'model_id', 'model_version', 'prediction', 'segments', 'timestamp']
>>> recs[0].key == ev["model_id"].encode()
True
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from stream_monitor.kafka.protocols import ProducerLike

__all__ = [
    "ARCHETYPES",
    "DRIFTED_FEATURE",
    "FEATURES",
    "NULL_RATE",
    "STABLE_FEATURES",
    "Record",
    "TrafficGenerator",
    "bad_records",
    "run_simulation",
]

logger = logging.getLogger(__name__)

NULL_RATE = 0.01
"""Probability that any one feature value is ``null``."""

ACCURACY_BEFORE_DRIFT = 0.9
ACCURACY_AFTER_DRIFT = 0.6
ETA_NOISE_STD_MIN = 3.0
"""Std (minutes) of the regression target around the prediction before drift (x3 after)."""
ETA_ERROR_FACTOR_AFTER_DRIFT = 3.0

ARCHETYPES: tuple[str, ...] = ("fraud-detector", "churn-model", "eta-regressor")

FEATURES: dict[str, dict[str, Literal["numeric", "boolean", "categorical"]]] = {
    "fraud-detector": {
        "amount": "numeric",
        "customer_age": "numeric",
        "is_international": "boolean",
        "country": "categorical",
        "device": "categorical",
    },
    "churn-model": {
        "tenure_days": "numeric",
        "monthly_spend": "numeric",
        "support_tickets": "numeric",
        "plan": "categorical",
        "device": "categorical",
        "country": "categorical",
    },
    "eta-regressor": {
        "distance_km": "numeric",
        "hour_of_day": "numeric",
        "traffic_index": "numeric",
        "vehicle": "categorical",
        "weather": "categorical",
    },
}
"""Feature names (in payload order) and kinds, per archetype."""

DRIFTED_FEATURE: dict[str, str] = {
    "fraud-detector": "amount",  # scale x3
    "churn-model": "tenure_days",  # mean + 2 std (+360 days)
    "eta-regressor": "distance_km",  # scale x2
}
"""The one numeric feature per archetype whose distribution shifts at ``drift_at``."""

STABLE_FEATURES: dict[str, list[str]] = {
    model: [f for f in feats if f != DRIFTED_FEATURE[model]] for model, feats in FEATURES.items()
}
"""Features per archetype whose distribution never changes."""

_BLOCK = 8192
"""Events drawn per numpy block (fixed, so a shorter run is a prefix of a longer one)."""

_COUNTRIES = ("US", "CA", "GB", "DE", "FR", "ES", "IN", "JP", "AU", "SG")
_COUNTRY_P = (0.32, 0.06, 0.13, 0.11, 0.09, 0.05, 0.10, 0.06, 0.05, 0.03)
_COUNTRY_REGION = ("us", "us", "eu", "eu", "eu", "eu", "apac", "apac", "apac", "apac")
_COUNTRY_RISK = np.array([0.0, -0.1, 0.1, -0.2, 0.0, 0.2, 0.4, -0.3, 0.1, 0.0])
_DEVICES = ("ios", "android", "web")
_DEVICE_P = (0.42, 0.38, 0.20)
_PLANS = ("basic", "standard", "premium")
_PLAN_P = (0.50, 0.35, 0.15)
_PLAN_EFFECT = np.array([0.5, 0.0, -0.6])
_VEHICLES = ("car", "scooter", "bike")
_VEHICLE_P = (0.5, 0.3, 0.2)
_MIN_PER_KM = np.array([2.5, 3.0, 4.0])
_WEATHERS = ("clear", "rain", "snow")
_WEATHER_P = (0.70, 0.22, 0.08)
_WEATHER_FACTOR = np.array([1.0, 1.15, 1.4])
_REGIONS = ("us", "eu", "apac")
_REGION_P = (0.40, 0.35, 0.25)
_HOUR_PROFILE = np.array(
    [1, 1, 1, 1, 1, 2, 4, 7, 9, 7, 6, 7, 9, 8, 6, 6, 8, 10, 10, 8, 6, 4, 3, 2], dtype=float
)
_HOUR_P = _HOUR_PROFILE / _HOUR_PROFILE.sum()
_RUSH = np.where(np.isin(np.arange(24), [7, 8, 9, 16, 17, 18, 19]), 1.3, 1.0)

# One shared (never mutated) segments dict per region keeps the per-event cost down.
_SEGMENT_OF_REGION: dict[str, dict[str, str]] = {r: {"region": r} for r in _REGIONS}
_SEGMENTS_BY_COUNTRY = [_SEGMENT_OF_REGION[r] for r in _COUNTRY_REGION]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce: topic, key (model_id, UTF-8), JSON value, event time (s)."""

    topic: str
    key: bytes
    value: bytes
    timestamp: float


@dataclass(frozen=True, slots=True)
class _Drawn:
    """One model's share of a block: feature columns (payload-ready lists), outputs, truths."""

    columns: list[list[Any]]
    predictions: list[Any]
    labels: list[Any]
    segments: list[dict[str, str]]


def _nullify(rng: np.random.Generator, column: list[Any]) -> list[Any]:
    for i in np.flatnonzero(rng.random(len(column)) < NULL_RATE).tolist():
        column[i] = None
    return column


def _pick(rng: np.random.Generator, n: int, p: Sequence[float]) -> np.ndarray:
    return rng.choice(len(p), size=n, p=p)


def _names(values: Sequence[str], idx: np.ndarray) -> list[str]:
    return np.asarray(values, dtype=object)[idx].tolist()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _truth_agrees(rng: np.random.Generator, drifted: np.ndarray) -> np.ndarray:
    accuracy = np.where(drifted, ACCURACY_AFTER_DRIFT, ACCURACY_BEFORE_DRIFT)
    return rng.random(len(drifted)) < accuracy


def _draw_fraud(rng: np.random.Generator, n: int, drifted: np.ndarray) -> _Drawn:
    log_amount = rng.normal(3.5, 1.0, n)
    amount = np.exp(log_amount) * np.where(drifted, 3.0, 1.0)
    age = np.clip(np.rint(rng.normal(41.0, 13.0, n)), 18, 95).astype(np.int64)
    international = rng.random(n) < 0.12
    country = _pick(rng, n, _COUNTRY_P)
    device = _pick(rng, n, _DEVICE_P)
    logit = (
        -3.0
        + 1.1 * (np.log(amount) - 3.5)
        + 1.2 * international
        + 0.6 * (device == 2)
        + _COUNTRY_RISK[country]
        - 0.015 * (age - 41)
        + rng.normal(0.0, 0.8, n)
    )
    score = np.round(_sigmoid(logit), 4)
    predicted = (score >= 0.5).astype(np.int64)
    truth = np.where(_truth_agrees(rng, drifted), predicted, 1 - predicted)
    columns = [
        np.round(amount, 2).tolist(),
        age.tolist(),
        international.tolist(),
        _names(_COUNTRIES, country),
        _names(_DEVICES, device),
    ]
    for col in columns:
        _nullify(rng, col)
    preds = [
        {"label": lab, "score": s}
        for lab, s in zip(predicted.tolist(), score.tolist(), strict=True)
    ]
    segments = [_SEGMENTS_BY_COUNTRY[c] for c in country.tolist()]
    return _Drawn(columns, preds, truth.tolist(), segments)


def _draw_churn(rng: np.random.Generator, n: int, drifted: np.ndarray) -> _Drawn:
    tenure_raw = rng.normal(540.0, 180.0, n) + np.where(drifted, 360.0, 0.0)
    tenure = np.maximum(np.rint(tenure_raw), 0).astype(np.int64)
    spend = np.exp(rng.normal(3.4, 0.45, n))
    tickets = rng.poisson(1.3, n)
    plan = _pick(rng, n, _PLAN_P)
    device = _pick(rng, n, _DEVICE_P)
    country = _pick(rng, n, _COUNTRY_P)
    logit = (
        -0.6
        - 0.004 * (tenure - 540)
        + 0.45 * (tickets - 1.3)
        + _PLAN_EFFECT[plan]
        - 0.3 * (np.log(spend) - 3.4)
        + rng.normal(0.0, 0.7, n)
    )
    p_churn = _sigmoid(logit)
    predicted = p_churn >= 0.5
    score = np.round(np.where(predicted, p_churn, 1.0 - p_churn), 4)  # score of the given class
    agrees = _truth_agrees(rng, drifted)
    truth_churn = np.where(agrees, predicted, ~predicted)
    columns = [
        tenure.tolist(),
        np.round(spend, 2).tolist(),
        tickets.tolist(),
        _names(_PLANS, plan),
        _names(_DEVICES, device),
        _names(_COUNTRIES, country),
    ]
    for col in columns:
        _nullify(rng, col)
    classes = ("stay", "churn")
    preds = [
        {"label": classes[c], "score": s}
        for c, s in zip(predicted.tolist(), score.tolist(), strict=True)
    ]
    truth = [classes[c] for c in truth_churn.tolist()]
    segments = [_SEGMENTS_BY_COUNTRY[c] for c in country.tolist()]
    return _Drawn(columns, preds, truth, segments)


def _draw_eta(rng: np.random.Generator, n: int, drifted: np.ndarray) -> _Drawn:
    distance = np.exp(rng.normal(1.5, 0.6, n)) * np.where(drifted, 2.0, 1.0)
    hour = _pick(rng, n, _HOUR_P)
    traffic = rng.beta(2.0, 5.0, n)
    vehicle = _pick(rng, n, _VEHICLE_P)
    weather = _pick(rng, n, _WEATHER_P)
    region = _pick(rng, n, _REGION_P)
    distance = np.round(distance, 3)
    traffic = np.round(traffic, 3)
    eta = 6.0 + (
        distance * _MIN_PER_KM[vehicle] * (1.0 + traffic) * _RUSH[hour] * _WEATHER_FACTOR[weather]
    )
    eta = np.round(eta, 2)
    noise_std = ETA_NOISE_STD_MIN * np.where(drifted, ETA_ERROR_FACTOR_AFTER_DRIFT, 1.0)
    actual = np.round(np.maximum(eta + noise_std * rng.standard_normal(n), 1.0), 2)
    columns = [
        distance.tolist(),
        hour.tolist(),
        traffic.tolist(),
        _names(_VEHICLES, vehicle),
        _names(_WEATHERS, weather),
    ]
    for col in columns:
        _nullify(rng, col)
    segments = [_SEGMENT_OF_REGION[_REGIONS[r]] for r in region.tolist()]
    return _Drawn(columns, eta.tolist(), actual.tolist(), segments)


@dataclass(frozen=True, slots=True)
class _Archetype:
    name: str
    version: str
    draw: Callable[[np.random.Generator, int, np.ndarray], _Drawn]


_ARCHETYPE_IMPL: dict[str, _Archetype] = {
    "fraud-detector": _Archetype("fraud-detector", "3.2.0", _draw_fraud),
    "churn-model": _Archetype("churn-model", "1.7.1", _draw_churn),
    "eta-regressor": _Archetype("eta-regressor", "2.0.4", _draw_eta),
}


def _archetype_of(model: str, position: int) -> str:
    if model in _ARCHETYPE_IMPL:
        return model
    for name in ARCHETYPES:
        if model.startswith(name):
            return name
    return ARCHETYPES[position % len(ARCHETYPES)]


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    key: bytes
    archetype: _Archetype
    feature_names: tuple[str, ...]


class TrafficGenerator:
    """Deterministic synthetic prediction and label traffic for several models.

    Parameters
    ----------
    seed
        Seed of the random stream; the same seed and parameters give the same records.
    drift_at
        Global event index (0-based, counted over all models) from which every model's
        :data:`DRIFTED_FEATURE` shifts and its accuracy drops; ``None`` never drifts.
    models
        Model ids. A known archetype name (or a name starting with one) picks that archetype;
        other names cycle through :data:`ARCHETYPES` by position. Each prediction goes to a
        model chosen uniformly at random.
    label_delay
        ``(low, high)`` seconds of event time between a prediction and its label (uniform).
    label_rate
        Fraction of predictions that ever get a label.
    start_time
        Event time (Unix seconds) of the first prediction.
    rate
        Predictions per second of event time (event ``i`` is at ``start_time + i / rate``).
    prediction_topic, label_topic
        Topics written into the :class:`Record` objects.

    Raises
    ------
    ValueError
        If a parameter is out of range or model ids are empty or repeated.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        drift_at: int | None = None,
        models: Sequence[str] = ("fraud-detector", "churn-model", "eta-regressor"),
        label_delay: tuple[float, float] = (2.0, 10.0),
        label_rate: float = 0.8,
        start_time: float = 1_700_000_000.0,
        rate: float = 100.0,
        prediction_topic: str = "predictions",
        label_topic: str = "labels",
    ) -> None:
        if drift_at is not None and drift_at < 0:
            raise ValueError(f"drift_at must be >= 0 or None, got {drift_at}")
        if isinstance(models, str):
            raise ValueError("models must be a sequence of model ids, not one string")
        models = tuple(models)
        if not models or any(not isinstance(m, str) or not m for m in models):
            raise ValueError("models must be a non-empty sequence of non-empty strings")
        if len(set(models)) != len(models):
            raise ValueError(f"model ids must be unique, got {models}")
        lo, hi = (float(v) for v in label_delay)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
            raise ValueError(
                f"label_delay must be (low, high) with 0 <= low <= high: {label_delay}"
            )
        if not 0.0 <= label_rate <= 1.0:
            raise ValueError(f"label_rate must be in [0, 1], got {label_rate}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate}")
        if not math.isfinite(start_time) or start_time < 0:
            raise ValueError(f"start_time must be Unix seconds, got {start_time}")
        self.seed = seed
        self.drift_at = drift_at
        self.models: tuple[str, ...] = models
        self.label_delay = (lo, hi)
        self.label_rate = float(label_rate)
        self.start_time = float(start_time)
        self.rate = float(rate)
        self.prediction_topic = prediction_topic
        self.label_topic = label_topic
        self._models = [
            _Model(
                name=m,
                key=m.encode(),
                archetype=_ARCHETYPE_IMPL[_archetype_of(m, i)],
                feature_names=tuple(FEATURES[_archetype_of(m, i)]),
            )
            for i, m in enumerate(models)
        ]

    def archetype(self, model: str) -> str:
        """The archetype (a key of :data:`FEATURES`) that ``model`` follows."""
        for m in self._models:
            if m.name == model:
                return m.archetype.name
        raise KeyError(model)

    def drifted_feature(self, model: str) -> str:
        """The feature of ``model`` that shifts at ``drift_at``."""
        return DRIFTED_FEATURE[self.archetype(model)]

    def stable_features(self, model: str) -> list[str]:
        """The features of ``model`` whose distribution never changes."""
        return list(STABLE_FEATURES[self.archetype(model)])

    def events(self, n: int) -> Iterator[Record]:
        """Yield ``n`` prediction records and the label records that join them.

        Records come in event-time order: before each prediction, every pending label due at
        or before its time is yielded; after the last prediction the remaining labels are
        flushed, so every labelled prediction gets its label. Each call starts afresh from
        the seed, and the first ``k`` predictions of ``events(n)`` are the same for any
        ``n >= k``.

        Parameters
        ----------
        n
            Number of predictions (labels come on top, about ``label_rate * n``).

        Returns
        -------
        Iterator[Record]
            Predictions (``prediction_topic``) and labels (``label_topic``), values as JSON.

        Raises
        ------
        ValueError
            If ``n`` is negative.

        Examples
        --------
        >>> gen = TrafficGenerator(seed=3, drift_at=1000, label_rate=0.5)
        >>> recs = list(gen.events(2000))
        >>> preds = [orjson.loads(r.value) for r in recs if r.topic == "predictions"]
        >>> len(preds), len({p["event_id"] for p in preds})
        (2000, 2000)
        >>> labels = [orjson.loads(r.value) for r in recs if r.topic == "labels"]
        >>> 900 < len(labels) < 1100
        True
        >>> sorted(labels[0])
        ['event_id', 'label', 'model_id', 'timestamp']
        >>> recs == list(gen.events(2000))
        True
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return self._events(int(n))

    def _events(self, n: int) -> Iterator[Record]:
        rng = np.random.default_rng(self.seed)
        heap: list[tuple[float, int, Record]] = []
        push, pop = heapq.heappush, heapq.heappop
        start = 0
        while start < n:
            count = min(_BLOCK, n - start)
            preds, labels = self._block(rng, start, count)
            for i in range(count):
                rec = preds[i]
                t = rec.timestamp
                while heap and heap[0][0] <= t:
                    yield pop(heap)[2]
                yield rec
                lab = labels[i]
                if lab is not None:
                    push(heap, (lab.timestamp, start + i, lab))
            start += count
        while heap:
            yield pop(heap)[2]

    def _block(
        self, rng: np.random.Generator, start: int, count: int
    ) -> tuple[list[Record], list[Record | None]]:
        """Draw a full block of ``_BLOCK`` events from ``rng``; encode the first ``count``."""
        size = _BLOCK
        model_idx = rng.integers(0, len(self._models), size=size)
        labelled = rng.random(size) < self.label_rate
        delay = rng.uniform(self.label_delay[0], self.label_delay[1], size)
        gidx = start + np.arange(size, dtype=np.int64)
        ts = self.start_time + gidx / self.rate
        due = np.maximum(np.round(ts + delay, 3), ts)
        drifted = gidx >= (size + start if self.drift_at is None else self.drift_at)

        preds: list[Record] = [None] * count  # type: ignore[list-item]
        labels: list[Record | None] = [None] * count
        dumps = orjson.dumps
        ptopic, ltopic = self.prediction_topic, self.label_topic
        for m, model in enumerate(self._models):
            pos = np.flatnonzero(model_idx == m)
            drawn = model.archetype.draw(rng, len(pos), drifted[pos])
            k = int(np.searchsorted(pos, count))
            if k == 0:
                continue
            sel = pos[:k]
            name, key, version = model.name, model.key, model.archetype.version
            names = model.feature_names
            rows = zip(*(col[:k] for col in drawn.columns), strict=True)
            for p, g, t, d, is_lab, row, pred, truth, seg in zip(
                sel.tolist(),
                gidx[sel].tolist(),
                ts[sel].tolist(),
                due[sel].tolist(),
                labelled[sel].tolist(),
                rows,
                drawn.predictions[:k],
                drawn.labels[:k],
                drawn.segments[:k],
                strict=True,
            ):
                event_id = f"{name}-{g}"
                value = dumps(
                    {
                        "event_id": event_id,
                        "model_id": name,
                        "model_version": version,
                        "timestamp": t,
                        "features": dict(zip(names, row, strict=False)),
                        "prediction": pred,
                        "segments": seg,
                    }
                )
                preds[p] = Record(ptopic, key, value, t)
                if is_lab:
                    label_value = dumps(
                        {"event_id": event_id, "model_id": name, "timestamp": d, "label": truth}
                    )
                    labels[p] = Record(ltopic, key, label_value, d)
        return preds, labels


_PACING_SLACK_S = 0.001
_POLL_EVERY = 64
_BUFFER_FULL_POLL_S = 0.1
_FLUSH_TIMEOUT_S = 30.0


def run_simulation(
    producer: ProducerLike,
    generator: TrafficGenerator,
    n: int,
    *,
    rate: float | None,
    on_progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Produce ``generator.events(n)`` to Kafka, optionally paced, and flush.

    Parameters
    ----------
    producer
        A ``confluent_kafka.Producer`` (or anything with ``produce``/``poll``/``flush``).
        Records are produced with ``timestamp`` = event time in integer milliseconds.
    generator
        The traffic to produce.
    n
        Number of predictions (labels come on top).
    rate
        Predictions per second of wall time; ``None`` produces as fast as possible.
    on_progress
        Called after each prediction handed to the producer, with the number of predictions
        produced so far (1, 2, ..., so ``k >= generator.drift_at`` means drift is on the wire).
        Keep it cheap; throttle inside it if needed.
    stop
        When set, production stops early (also while paced or waiting for buffer space).

    Notes
    -----
    Only predictions are paced; labels go out in event-time order between them, except the
    labels still pending after the last prediction, which are produced right away.

    Returns
    -------
    int
        Number of records (predictions and labels) handed to the producer.

    Raises
    ------
    ValueError
        If ``rate`` is not a positive number.

    Examples
    --------
    >>> class ListProducer:
    ...     def __init__(self): self.sent = []
    ...     def produce(self, topic, value=None, key=None, *, timestamp=0):
    ...         self.sent.append((topic, key, timestamp))
    ...     def poll(self, timeout=0.0): return 0
    ...     def flush(self, timeout=0.0): return 0
    >>> p = ListProducer()
    >>> run_simulation(p, TrafficGenerator(seed=0, label_rate=1.0), 10, rate=None)
    20
    >>> p.sent[0][0], p.sent[0][2]
    ('predictions', 1700000000000)
    """
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number or None, got {rate}")
    produced = 0
    predictions = 0
    ptopic = generator.prediction_topic
    t0 = time.monotonic()
    logger.info(
        "producing %d predictions for %d models (rate=%s/s, drift_at=%s)",
        n,
        len(generator.models),
        rate,
        generator.drift_at,
    )
    stopped = False
    for rec in generator.events(n):
        if stop is not None and stop.is_set():
            stopped = True
            break
        is_prediction = rec.topic == ptopic
        if is_prediction and rate is not None:
            ahead = t0 + predictions / rate - time.monotonic()
            if ahead > _PACING_SLACK_S:
                if stop is not None:
                    if stop.wait(ahead):
                        stopped = True
                        break
                else:
                    time.sleep(ahead)
        if not _produce(producer, rec, stop):
            stopped = True
            break
        produced += 1
        if produced % _POLL_EVERY == 0:
            producer.poll(0)
        if is_prediction:
            predictions += 1
            if on_progress is not None:
                on_progress(predictions)
    remaining = producer.flush(_FLUSH_TIMEOUT_S)
    if remaining:
        logger.warning(
            "%d records still undelivered after %.0f s flush", remaining, _FLUSH_TIMEOUT_S
        )
    logger.info(
        "produced %d records (%d predictions) in %.1f s%s",
        produced,
        predictions,
        time.monotonic() - t0,
        " (stopped early)" if stopped else "",
    )
    return produced


def _produce(producer: ProducerLike, rec: Record, stop: threading.Event | None) -> bool:
    """Produce one record, waiting out a full local queue; False if ``stop`` was set meanwhile."""
    ts_ms = round(rec.timestamp * 1000)
    waits = 0
    while True:
        try:
            producer.produce(rec.topic, value=rec.value, key=rec.key, timestamp=ts_ms)
            return True
        except BufferError:
            if waits == 0:
                logger.debug("producer queue full; polling until there is room")
            waits += 1
            if stop is not None and stop.is_set():
                return False
            producer.poll(_BUFFER_FULL_POLL_S)


_HUGE_RECORD_BYTES = 1_100_000
_DROP: Any = object()
"""Marker for a field that :func:`bad_records` leaves out."""


def bad_records(
    topic: str, *, kind: Literal["prediction", "label"] | None = None
) -> list[tuple[bytes | None, bytes, str]]:
    """Malformed records for the dead-letter tests: ``(key, value, expected_reason)``.

    The expected reasons are those of :func:`stream_monitor.events.decode.decode_record`:
    ``"empty"`` (zero-length value), ``"decode_error"`` (not UTF-8 JSON, or JSON that is not an
    object), ``"validation_error"`` (an object breaking the wire contract) and ``"oversized"``
    (a value of exactly 1,100,000 bytes, just over the 1 MiB default; otherwise valid).

    Parameters
    ----------
    topic
        The topic the records are meant for; it selects prediction- or label-shaped records
        (``"label"`` in the name means labels) unless ``kind`` is given.
    kind
        Force prediction- or label-shaped records.

    Returns
    -------
    list of (bytes or None, bytes, str)
        Key (the model id, or ``None`` for a keyless record), value and expected reason.

    Examples
    --------
    >>> recs = bad_records("predictions")
    >>> sorted({reason for _, _, reason in recs})
    ['decode_error', 'empty', 'oversized', 'validation_error']
    >>> max(len(v) for _, v, _ in recs)
    1100000
    """
    if kind is None:
        kind = "label" if "label" in topic.lower() else "prediction"
    model = "fraud-detector"
    key = model.encode()
    if kind == "prediction":
        good: dict[str, Any] = {
            "event_id": "bad-0",
            "model_id": model,
            "model_version": "3.2.0",
            "timestamp": 1_700_000_000.0,
            "features": {"amount": 12.5, "country": "US"},
            "prediction": {"label": 0, "score": 0.1},
            "segments": {"region": "us"},
        }
    else:
        good = {"event_id": "bad-0", "model_id": model, "timestamp": 1_700_000_010.0, "label": 0}

    def variant(**changes: Any) -> bytes:
        obj = {**good, **changes}
        return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})

    records: list[tuple[bytes | None, bytes, str]] = [
        (key, b'{"event_id": "bad-1", "model_id": ', "decode_error"),  # truncated JSON
        (None, b"{not json at all}", "decode_error"),
        (key, b"\xff\xfe\x00\x81 binary", "decode_error"),  # not UTF-8
        # valid-looking JSON with an invalid UTF-8 byte inside a string
        (key, variant(event_id="bad-2").replace(b'"bad-2"', b'"bad-\xc3\x28"'), "decode_error"),
        (key, b"[1, 2, 3]", "decode_error"),  # JSON, but not an object
        (key, b"", "empty"),
        (key, variant(event_id=_DROP), "validation_error"),  # missing event_id
        (key, variant(event_id="bad-4", timestamp="yesterday"), "validation_error"),
        (key, variant(event_id="bad-5", model_id=42), "validation_error"),
    ]
    if kind == "prediction":
        records += [
            (key, variant(event_id="bad-6", features="amount=12.5"), "validation_error"),
            (key, variant(event_id="bad-7", prediction=_DROP), "validation_error"),
            (key, variant(event_id="bad-8", features={"amount": [1, 2]}), "validation_error"),
        ]
    else:
        records.append((key, variant(event_id="bad-6", label=_DROP), "validation_error"))
    skeleton = variant(event_id="bad-huge", **_huge_change(kind, ""))
    filler = "x" * (_HUGE_RECORD_BYTES - len(skeleton))
    huge = variant(event_id="bad-huge", **_huge_change(kind, filler))
    assert len(huge) == _HUGE_RECORD_BYTES
    records.append((key, huge, "oversized"))
    return records


def _huge_change(kind: str, filler: str) -> dict[str, Any]:
    if kind == "prediction":
        return {"features": {"amount": 12.5, "note": filler}}
    return {"label": filler or ""}
