"""The prediction/label join: per model, bounded, TTL-evicted buffers of predictions awaiting
their labels, with per-model counters and a label-delay histogram.

Examples
--------
>>> j = LabelJoin(capacity=2, ttl_seconds=60.0)
>>> j.add_prediction("m", "a", 0.0, label="1", score=0.9)
>>> j.add_prediction("m", "b", 1.0, label="0", score=0.2)
>>> j.add_prediction("m", "c", 2.0, label="1", score=0.7)   # evicts "a": capacity is 2
>>> j.evicted, len(j)
(1, 2)
>>> j.match("m", "b", label_timestamp=31.0)
PendingPrediction(timestamp=1.0, label='0', score=0.2, model_version=None, segments=None)
>>> j.match("m", "a") is None, j.unmatched_labels
(True, 1)
>>> j.add_prediction("m", "d", 100.0, label=None, score=1.0)  # "c" is older than 60 s: expires
>>> j.expired, len(j)
(1, 1)
>>> j.by_model["m"]
ModelJoinStats(pending=1, matched=1, expired=1, evicted=1, duplicates=0, labels_unmatched=1)
>>> j.awaiting_ratio("m")
0.25
>>> counts, total, n = j.delay_histogram("m")   # one label, 30 s after its prediction
>>> counts[:4], total, n
([0, 0, 1, 0], 30.0, 1)
"""

from __future__ import annotations

import base64
import functools
import heapq
import itertools
import math
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

import msgspec
import numpy as np

__all__ = [
    "CHUNK_SIZE",
    "DELAY_BUCKETS",
    "EarlyLabels",
    "LabelJoin",
    "Mark",
    "ModelJoinStats",
    "PendingPrediction",
]

#: Version of :meth:`LabelJoin.snapshot` (3: the waiting predictions as columns per model;
#: 4: ``chunks``, the older waiting predictions kept apart, see :meth:`LabelJoin.split_snapshot`).
SNAPSHOT_VERSION = 4
#: Arrival sequence numbers per chunk of :meth:`LabelJoin.split_snapshot`.
CHUNK_SIZE = 2048
#: Consecutive predictions beyond ``max_future_seconds`` that confirm a jump of event time.
FUTURE_CONFIRM = 10
#: Version of :meth:`EarlyLabels.snapshot` (2: the future guard's run).
EARLY_SNAPSHOT_VERSION = 2

#: Upper bounds (seconds, inclusive: Prometheus ``le``) of the label-delay histogram buckets;
#: a last ``+Inf`` bucket is implied.
DELAY_BUCKETS: tuple[float, ...] = (
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    3 * 86400.0,
    7 * 86400.0,
    30 * 86400.0,
)


class PendingPrediction(msgspec.Struct, frozen=True, gc=False):
    """One prediction waiting for its label.

    Hundreds of thousands wait at once and each lives for seconds to days, so none is tracked
    by the cyclic garbage collector (``gc=False``; its fields are strings, floats and a tuple of
    strings, which form no cycles): a NamedTuple is tracked for its whole life, and so is the
    tuple that holds it, and every full collection walked two objects per waiting prediction
    (0.38 s for 600,000, load_tests/RESULTS.md).

    >>> import gc
    >>> p = PendingPrediction(1.0, "a", 0.5)
    >>> gc.is_tracked(p), p.timestamp, p.model_version
    (False, 1.0, None)
    """

    timestamp: float
    label: str | None
    score: float | None
    model_version: str | None = None
    #: ``key=value`` ids of the segments the prediction belongs to (configured keys only).
    segments: tuple[str, ...] | None = None


@dataclass(slots=True)
class ModelJoinStats:
    """Counters of one model in the join (prediction counts, except ``labels_unmatched``).

    Every prediction added ends up in exactly one of ``pending`` (still waiting), ``matched``,
    ``expired``, ``evicted`` or ``duplicates`` (replaced by a later copy with the same event id).
    """

    pending: int = 0
    matched: int = 0
    expired: int = 0
    evicted: int = 0
    duplicates: int = 0
    labels_unmatched: int = 0


#: :data:`DELAY_BUCKETS` as an array, for :meth:`_Delays.observe_many`.
_BOUNDS = np.array(DELAY_BUCKETS)


class _Delays:
    """Non-cumulative counts per bucket of :data:`DELAY_BUCKETS` (+Inf last), sum and count."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DELAY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, delay: float) -> None:
        self.counts[bisect_left(DELAY_BUCKETS, delay)] += 1
        self.total += delay
        self.count += 1

    def observe_many(self, delays: np.ndarray) -> None:
        """:meth:`observe` for each delay in turn (finite floats): the bucket of each by one
        binary search, and the sum added one delay at a time in order (``add.accumulate`` is
        sequential), so counts and sum are those of the loop, bit for bit."""
        buckets = np.searchsorted(_BOUNDS, delays, side="left")  # bisect_left
        for i, n in enumerate(np.bincount(buckets, minlength=len(self.counts)).tolist()):
            self.counts[i] += n
        self.total = float(np.add.accumulate(np.concatenate(([self.total], delays)))[-1])
        self.count += len(delays)


#: A waiting prediction and its global arrival sequence number.
_Entry = tuple[int, PendingPrediction]
#: One call's stored predictions (see ``LabelJoin._log``).
_Logged = tuple[
    str, int, Sequence[str], Sequence[PendingPrediction], Sequence[Sequence[Any]] | None
]


def _arrival(item: tuple[str, _Entry]) -> int:
    return item[1][0]


@dataclass(frozen=True)
class _Meta:
    """The small part of a :class:`LabelJoin` (no waiting predictions), copied at a mark."""

    counters: list[int]
    next_seq: int
    size: int
    stats: dict[str, tuple[int, ...]]
    watermarks: dict[str, float]
    future_runs: dict[str, tuple[int, float]]
    delays: dict[str, tuple[list[int], float, int]]
    queues: frozenset[str]


class Mark(NamedTuple):
    """A point in a :class:`LabelJoin`'s history (see :meth:`LabelJoin.mark`)."""

    position: int
    meta: _Meta


def _tagged(
    model_id: str, q: OrderedDict[str, _Entry]
) -> Iterator[tuple[int, str, str, PendingPrediction]]:
    for event_id, (seq, p) in q.items():
        yield seq, model_id, event_id, p


#: The partition totals, in the order snapshots and marks hold them.
_COUNTERS = (
    "evicted",
    "expired",
    "matched",
    "unmatched_labels",
    "duplicate_predictions",
    "future_timestamps",
    "negative_delays",
    "labels_unknown_model",
)
_SEQ = itemgetter(0)
_PREDICTION = itemgetter(1)
#: The snapshot's columns of a waiting prediction, with their getters.
_COLUMNS = {name: attrgetter(name) for name in PendingPrediction.__struct_fields__}
_TIMESTAMP = _COLUMNS["timestamp"]


def _enc(x: float) -> float | None:
    """An infinite float as JSON null (orjson would write null anyway, and read it back as None)."""
    return None if math.isinf(x) else x


def _dec(x: float | None, inf: float) -> float:
    return inf if x is None else float(x)


class LabelJoin:
    """Predictions wait here, per model and keyed by event id, until their label arrives.

    Parameters
    ----------
    capacity : int
        At most this many predictions wait in the whole partition, all models together.
    ttl_seconds : float
        Default time (event time) a prediction waits for its label before it expires.
    model_capacity : int, optional
        Default bound of the predictions of one model (``capacity`` if unset).
    overrides : Mapping[str, tuple[float, int]], optional
        ``overrides[model_id] = (ttl_seconds, capacity)`` of models whose labels come much
        sooner or later than the default (hours for one model, weeks for another).
    max_future_seconds : float, default 3600
        A prediction more than this far ahead of its model's watermark stores but does not
        advance the watermark (counted in ``future_timestamps``).

    Notes
    -----
    Each model has its own arrival-ordered queue and its own event-time *watermark*, the
    newest prediction timestamp of that model. A prediction older than its model's watermark
    minus that model's TTL expires (counted in ``expired``: its label never came). Expiry
    looks only at the oldest end of a queue and stops at the first recent entry, so each call
    costs O(1) amortised; a late prediction sitting behind a recent one therefore waits until
    the entries ahead of it are gone (equal to the definition when timestamps never go
    backwards). Between calls no queue starts with an expired entry: expiry runs after every
    change to a queue (an add, a match, an eviction).

    Watermarks are per model, so one model's clock (or its far-future timestamp) never
    expires the predictions of another. Within a model, a prediction more than
    ``max_future_seconds`` ahead of its watermark (once the model has one) is stored but does
    not move the watermark: a single producer with a bad clock would otherwise expire every
    prediction of the model still waiting for its label. A consequence: a model silent for
    longer than ``max_future_seconds`` (event time) would keep its old watermark, so
    ``FUTURE_CONFIRM`` consecutive predictions beyond reach confirm the jump (the watermark
    moves to the earliest of them); ``math.inf`` disables the guard.

    Two bounds evict the oldest entries (counted in ``evicted``): a model over its own
    capacity loses its own oldest prediction; when the partition is over ``capacity``, the
    model currently holding the most predictions loses its oldest one (fair share: a chatty
    model with unlabelled traffic cannot push out a quiet model's predictions; ties go to the
    lexicographically smallest model id, so replays evict the same entries).

    Counters are kept per model (:attr:`by_model`, :meth:`awaiting_ratio`,
    :meth:`delay_histogram`) and as partition totals, which equal the sums over models
    (except that ``unmatched_labels`` also counts, in ``labels_unknown_model``, labels of
    models that never had a prediction here: those get no per-model entry, so a stream of
    bogus model ids cannot grow the state).
    """

    def __init__(
        self,
        capacity: int,
        ttl_seconds: float,
        *,
        model_capacity: int | None = None,
        overrides: Mapping[str, tuple[float, int]] | None = None,
        max_future_seconds: float = 3600.0,
    ) -> None:
        if capacity < 1 or (model_capacity is not None and model_capacity < 1):
            raise ValueError("label-join capacities must be at least 1")
        if max_future_seconds < 0:
            raise ValueError("max_future_seconds must not be negative")
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.model_capacity = model_capacity
        self.overrides: dict[str, tuple[float, int]] = {
            m: (float(ttl), int(cap)) for m, (ttl, cap) in (overrides or {}).items()
        }
        if any(cap < 1 for _, cap in self.overrides.values()):
            raise ValueError("label-join capacities must be at least 1")
        self.max_future_seconds = max_future_seconds
        #: Counters per model that ever had a prediction here.
        self.by_model: dict[str, ModelJoinStats] = {}
        self._queues: dict[str, OrderedDict[str, _Entry]] = {}
        self._watermarks: dict[str, float] = {}
        self._delays: dict[str, _Delays] = {}
        self._size = 0
        self._seq = 0  # the next arrival sequence number
        self.evicted = 0
        self.expired = 0
        self.matched = 0
        self.unmatched_labels = 0
        self.duplicate_predictions = 0
        #: Predictions too far ahead of their model's watermark to advance it.
        self.future_timestamps = 0
        #: Per model: consecutive predictions beyond reach of its watermark, and the earliest.
        self._future_runs: dict[str, tuple[int, float]] = {}
        #: Labels timestamped before their prediction (clock skew): delay recorded as 0.
        self.negative_delays = 0
        #: Unmatched labels of models without any prediction here (also in unmatched_labels).
        self.labels_unknown_model = 0
        #: Waiting predictions a restore could not find (counted as evicted).
        self.lost_on_restore = 0
        #: Undo records since the settled mark (see :meth:`mark`): ``(model, event id, None)``
        #: for a prediction stored, ``(model, event id, entry)`` for one removed. None: off.
        self._journal: list[tuple[str, str, _Entry | None]] | None = None
        #: The small part of the state at the settled mark (counters, watermarks, ...).
        self._settled: _Meta | None = None
        #: What :meth:`split_snapshot` found last time, so that the next one costs what changed
        #: since, not what is held: the live offsets of each chunk sealed then (sorted), the
        #: sequence number those chunks end before, and the sequence numbers removed since
        #: (any; None: not known, the next split reads every queue; also past ``capacity``
        #: removals, so the list stays bounded when no checkpoint reads it). Two bytes per
        #: waiting prediction of a sealed chunk.
        self._live_chunks: dict[int, np.ndarray] = {}
        self._live_below = 0
        self._gone: list[int] | None = None
        #: What was stored since the last split, so that the next one need not read the
        #: queues (an ``OrderedDict`` read from its end costs a lookup per entry): per call
        #: that stored predictions, ``(model, first sequence number, event ids, the
        #: predictions, their columns or None)``, each stored under consecutive numbers (what
        #: left since is in ``_gone``); None until the first split, and past ``capacity``
        #: predictions (no split read it: bounded).
        self._log: list[_Logged] | None = None
        self._logged = 0
        #: The open chunk's columns per model at the last split (its waiting predictions then).
        self._open: dict[str, dict[str, list[Any]]] = {}
        #: Per sealed chunk at the last split: its live offsets and their encoding.
        self._encoded: dict[int, tuple[np.ndarray, list[Any]]] = {}

    def __len__(self) -> int:
        return self._size

    # ----------------------------------------------------------------------- per model

    def ttl_of(self, model_id: str) -> float:
        """The TTL of a model's predictions (its override, else ``ttl_seconds``)."""
        o = self.overrides.get(model_id)
        return self.ttl_seconds if o is None else o[0]

    def capacity_of(self, model_id: str) -> int:
        """The bound of a model's predictions (its override, else ``model_capacity``, else
        ``capacity``)."""
        o = self.overrides.get(model_id)
        if o is not None:
            return o[1]
        return self.capacity if self.model_capacity is None else self.model_capacity

    def model_watermark(self, model_id: str) -> float | None:
        """The event-time watermark of a model, or None before its first prediction."""
        return self._watermarks.get(model_id)

    @property
    def watermark(self) -> float:
        """The newest of the models' watermarks (``-inf`` if none): informational only,
        expiry uses each model's own."""
        return max(self._watermarks.values(), default=-math.inf)

    def awaiting_ratio(self, model_id: str) -> float | None:
        """The share of a model's predictions still awaiting their label: ``pending /
        (pending + matched + expired + evicted)``; None if it has none.

        Examples
        --------
        >>> j = LabelJoin(capacity=10, ttl_seconds=60.0)
        >>> for e in "abc":
        ...     j.add_prediction("m", e, 0.0, label=None, score=None)
        >>> _ = j.match("m", "a")
        >>> round(j.awaiting_ratio("m"), 3), j.awaiting_ratio("other")
        (0.667, None)
        """
        st = self.by_model.get(model_id)
        if st is None:
            return None
        n = st.pending + st.matched + st.expired + st.evicted
        return st.pending / n if n else None

    def delay_histogram(self, model_id: str) -> tuple[list[int], float, int]:
        """Label delays of a model's matched predictions: non-cumulative counts per bucket
        of :data:`DELAY_BUCKETS` (``delay <= bound``, then +Inf last), their sum and count.

        Only matches given a ``label_timestamp`` are recorded.

        Examples
        --------
        >>> j = LabelJoin(capacity=10, ttl_seconds=1e9)
        >>> j.add_prediction("m", "a", 100.0, label=None, score=None)
        >>> j.add_prediction("m", "b", 100.0, label=None, score=None)
        >>> _ = j.match("m", "a", label_timestamp=160.0)  # 60 s: the "le 60" bucket
        >>> _ = j.match("m", "b", label_timestamp=99.0)   # before its prediction: 0
        >>> j.delay_histogram("m"), j.negative_delays
        (([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 60.0, 2), 1)
        """
        d = self._delays.get(model_id)
        if d is None:
            return [0] * (len(DELAY_BUCKETS) + 1), 0.0, 0
        return list(d.counts), d.total, d.count

    # ---------------------------------------------------------------------- operations

    def add_prediction(
        self,
        model_id: str,
        event_id: str,
        timestamp: float,
        *,
        label: str | None,
        score: float | None,
        model_version: str | None = None,
        segments: tuple[str, ...] | None = None,
    ) -> None:
        """Store a prediction until its label comes; a second prediction with the same
        (model, event id) replaces the first (counted in ``duplicate_predictions``) and
        becomes the newest."""
        q = self._queues.get(model_id)
        if q is None:
            q = self._queues[model_id] = OrderedDict()
            self.by_model[model_id] = ModelJoinStats()
        st = self.by_model[model_id]
        journal = self._journal
        old = q.pop(event_id, None)
        if old is not None:
            self._removed(old[0])
            if journal is not None:
                journal.append((model_id, event_id, old))
            st.duplicates += 1
            st.pending -= 1
            self.duplicate_predictions += 1
            self._size -= 1
        wm = self._watermarks.get(model_id)
        if wm is None:
            self._watermarks[model_id] = timestamp
        elif timestamp - wm > self.max_future_seconds:
            self.future_timestamps += 1
            # A lone bad clock must not move the watermark, but a model that resumes after a
            # long silence must not be stuck either: FUTURE_CONFIRM consecutive predictions
            # beyond reach confirm the jump (to the earliest of them).
            run, earliest = self._future_runs.get(model_id, (0, timestamp))
            run, earliest = run + 1, min(earliest, timestamp)
            if run >= FUTURE_CONFIRM:
                self._watermarks[model_id] = earliest
                self._future_runs.pop(model_id, None)
            else:
                self._future_runs[model_id] = (run, earliest)
        else:
            self._future_runs.pop(model_id, None)
            if timestamp > wm:
                self._watermarks[model_id] = timestamp
        p = PendingPrediction(timestamp, label, score, model_version, segments)
        q[event_id] = (self._seq, p)
        self._note_stored(model_id, [event_id], [p], None)
        if journal is not None:
            journal.append((model_id, event_id, None))
        self._seq += 1
        st.pending += 1
        self._size += 1
        cap = self.capacity_of(model_id)
        while len(q) > cap:
            self._evict_oldest(model_id)
        touched = [model_id]
        while self._size > self.capacity:
            victim = self._fullest()
            self._evict_oldest(victim)
            touched.append(victim)
        for m in touched:
            self._expire(m)

    def add_predictions(self, model_id: str, rows: Sequence[tuple[str, PendingPrediction]]) -> None:
        """Store ``(event_id, prediction)`` rows of one model, in order: the same final state,
        counters and histograms as :meth:`add_prediction` called for each row in turn.

        Examples
        --------
        >>> a = LabelJoin(capacity=3, ttl_seconds=60.0)
        >>> b = LabelJoin(capacity=3, ttl_seconds=60.0)
        >>> rows = [(e, PendingPrediction(t, None, 0.5)) for e, t in
        ...         [("a", 0.0), ("b", 10.0), ("a", 20.0), ("c", 30.0), ("d", 90.0)]]
        >>> b.add_predictions("m", rows)
        >>> for e, p in rows:
        ...     a.add_prediction("m", e, p.timestamp, label=p.label, score=p.score)
        >>> a.snapshot() == b.snapshot(), b.by_model["m"]
        (True, ModelJoinStats(pending=2, matched=0, expired=1, evicted=1, duplicates=1, \
labels_unmatched=0))
        """
        if rows:
            self.add_columns(model_id, list(map(_SEQ, rows)), list(map(_PREDICTION, rows)))

    def add_columns(
        self,
        model_id: str,
        event_ids: Sequence[str],
        predictions: Sequence[PendingPrediction],
        newest: float | None = None,
        columns: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        """:meth:`add_predictions` of the rows ``zip(event_ids, predictions)`` (of equal
        lengths), given as the two columns: what a batch of events is read as, without a row
        tuple per prediction. ``newest``, if given, is the latest of the predictions'
        timestamps (``max(p.timestamp for p in predictions)``), when the caller has it;
        ``columns``, if given, the predictions' fields as columns (in the order of
        :class:`PendingPrediction`'s), which the next :meth:`split_snapshot` then need not
        read from the rows.

        >>> a, b = (LabelJoin(capacity=3, ttl_seconds=60.0) for _ in "ab")
        >>> ids, ts = ["a", "b", "a", "c", "d"], [0.0, 10.0, 20.0, 30.0, 90.0]
        >>> preds = [PendingPrediction(t, None, 0.5) for t in ts]
        >>> a.add_predictions("m", list(zip(ids, preds)))
        >>> b.add_columns("m", ids[:2], preds[:2], newest=10.0)
        >>> b.add_columns("m", ids[2:], preds[2:])
        >>> a.snapshot() == b.snapshot()
        True
        """
        if len(event_ids) != len(predictions):
            raise ValueError("add_columns: event ids and predictions differ in length")
        if not event_ids:
            return
        self._note_stored(model_id, event_ids, predictions, columns)
        try:
            self._store_columns(model_id, event_ids, predictions, newest)
        except BaseException:
            self._log = None  # what was stored is not known: the next split reads the queues
            raise

    def _store_columns(
        self,
        model_id: str,
        event_ids: Sequence[str],
        predictions: Sequence[PendingPrediction],
        newest: float | None,
    ) -> None:
        """:meth:`add_columns` of rows of equal lengths, at least one."""
        q = self._queues.get(model_id)
        if q is None:
            q = self._queues[model_id] = OrderedDict()
            self.by_model[model_id] = ModelJoinStats()
        st = self.by_model[model_id]
        watermarks, future_runs = self._watermarks, self._future_runs
        max_future, capacity = self.max_future_seconds, self.capacity
        model_cap, ttl = self.capacity_of(model_id), self.ttl_of(model_id)
        wm = watermarks.get(model_id)
        horizon = -math.inf if wm is None else wm - ttl
        seq = self._seq
        journal = self._journal
        if wm is not None:
            if newest is None:
                newest = max(map(_TIMESTAMP, predictions))
            if self._bulk(model_id, q, st, event_ids, predictions, newest, wm, model_cap):
                return
        for event_id, p in zip(event_ids, predictions, strict=True):
            ts = p.timestamp
            # The head of the queue can change only if something leaves it or it was empty;
            # otherwise it is known not to be expired, and stays so unless the watermark moves.
            head_may_expire = not q
            old = q.pop(event_id, None)
            if old is not None:
                self._removed(old[0])
                if journal is not None:
                    journal.append((model_id, event_id, old))
                st.duplicates += 1
                st.pending -= 1
                self.duplicate_predictions += 1
                self._size -= 1
                head_may_expire = True
            if wm is None:
                wm = watermarks[model_id] = ts
                horizon = wm - ttl
                head_may_expire = True
            elif ts - wm > max_future:
                self.future_timestamps += 1
                run, earliest = future_runs.get(model_id, (0, ts))
                run, earliest = run + 1, min(earliest, ts)
                if run >= FUTURE_CONFIRM:
                    wm = watermarks[model_id] = earliest
                    horizon = wm - ttl
                    head_may_expire = True
                    future_runs.pop(model_id, None)
                else:
                    future_runs[model_id] = (run, earliest)
            else:
                if future_runs:
                    future_runs.pop(model_id, None)
                if ts > wm:
                    wm = watermarks[model_id] = ts
                    horizon = wm - ttl
                    head_may_expire = True
            q[event_id] = (seq, p)
            if journal is not None:
                journal.append((model_id, event_id, None))
            seq += 1
            st.pending += 1
            self._size += 1
            while len(q) > model_cap:
                self._evict_oldest(model_id)
                head_may_expire = True
            victims: list[str] | None = None
            while self._size > capacity:
                victim = self._fullest()
                self._evict_oldest(victim)
                if victim == model_id:
                    head_may_expire = True
                else:
                    victims = victims or []
                    victims.append(victim)
            if head_may_expire and q and next(iter(q.values()))[1].timestamp < horizon:
                self._expire(model_id)
            for m in victims or ():
                self._expire(m)
        self._seq = seq

    def _note_stored(
        self,
        model_id: str,
        ids: Sequence[str],
        predictions: Sequence[PendingPrediction],
        columns: Sequence[Sequence[Any]] | None,
    ) -> None:
        """Log predictions stored (or about to be) under the next sequence numbers (see
        ``_log``): every row gets one, whatever happens to it then (a duplicate, an eviction
        or an expiry removes it, noted in ``_gone``). A call that fails after this drops
        the log."""
        log = self._log
        if log is None:
            return
        self._logged += len(ids)
        if self._logged > self.capacity:
            self._log = None
        else:
            log.append((model_id, self._seq, ids, predictions, columns))

    def _bulk(
        self,
        model_id: str,
        q: OrderedDict[str, _Entry],
        st: ModelJoinStats,
        ids: Sequence[str],
        preds: Sequence[PendingPrediction],
        newest: float,
        wm: float,
        model_cap: int,
    ) -> bool:
        """:meth:`add_predictions` in a few calls, when the rows can change the join only as
        the row-by-row loop would in its simplest case: no duplicate event id (among the
        rows or with a waiting one), no timestamp beyond reach of the watermark, no bound
        reached. Then the rows go in at the end in order, the watermark becomes the newest
        timestamp, and the head expires once against the final horizon: the loop checks the
        head only when the queue was empty or the watermark moved, each time against a horizon
        no later than the final one, and pops from the head only, so it leaves the same
        queue. When a bound is reached, :meth:`_bulk_full` takes over. False (nothing done)
        when the case is not that simple. The rows are ``zip(ids, preds)``; ``newest`` is the
        latest of their timestamps."""
        n = len(ids)
        if newest - wm > self.max_future_seconds or not q.keys().isdisjoint(ids):
            return False
        if len(set(ids)) != n:
            return False
        if len(q) + n > model_cap or self._size + n > self.capacity:
            return self._bulk_full(model_id, q, st, ids, preds, wm, newest, model_cap)
        was_empty = not q
        seq = self._seq
        q.update(zip(ids, zip(range(seq, seq + n), preds, strict=True), strict=True))
        if self._journal is not None:
            self._journal.extend(zip(itertools.repeat(model_id), ids, itertools.repeat(None)))
        self._seq = seq + n
        st.pending += n
        self._size += n
        self._future_runs.pop(model_id, None)
        moved = newest > wm
        if moved:
            self._watermarks[model_id] = newest
        horizon = self._watermarks[model_id] - self.ttl_of(model_id)
        if (was_empty or moved) and next(iter(q.values()))[1].timestamp < horizon:
            self._expire(model_id)
        return True

    def _eviction_plan(self, model_id: str, n: int, model_cap: int) -> tuple[int, list[str], int]:
        """Which model the row-by-row loop evicts the oldest prediction of, row by row, when
        ``n`` new predictions of ``model_id`` come in and nothing expires meanwhile (see
        :meth:`_bulk_full`): ``(a, others, r)``, i.e. the first ``a`` rows evict nothing, the
        next ``len(others)`` rows evict one of ``others[i]`` each (models other than
        ``model_id``), the last ``r`` rows one of ``model_id`` each.

        From counts alone: a row of a model at its capacity evicts that model's oldest (and
        leaves the total as it was); otherwise a row that takes the partition over
        ``capacity`` evicts from the fullest model (ties: the smallest id), the new row
        counted. Once that is the row's own model, the counts are back to what they were
        before the row, so every later row evicts from it too.

        >>> j = LabelJoin(capacity=7, ttl_seconds=1e9)
        >>> for m, k in [("a", 3), ("b", 3), ("c", 1)]:
        ...     for i in range(k):
        ...         j.add_prediction(m, f"{m}{i}", 0.0, label=None, score=None)
        >>> j._eviction_plan("c", 4, 7)  # a and b (ties: smallest id), then c is the fullest
        (0, ['a', 'b'], 2)
        """
        queues = self._queues
        mine = len(queues[model_id])
        a = min(n, self.capacity - self._size, model_cap - mine)
        mine += a
        others: list[str] = []
        if a < n and mine < model_cap:  # the partition is full: each row evicts the fullest
            heap = [(-len(q), m) for m, q in queues.items() if m != model_id and q]
            heapq.heapify(heap)
            for _ in range(n - a):
                if mine == model_cap:
                    break
                mine += 1
                if not heap:
                    break
                top = heap[0]
                if (-mine, model_id) < top:  # the row's own model is the fullest
                    break
                others.append(top[1])
                if top[0] == -1:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (top[0] + 1, top[1]))
        return a, others, n - a - len(others)

    def _bulk_full(
        self,
        model_id: str,
        q: OrderedDict[str, _Entry],
        st: ModelJoinStats,
        ids: Sequence[str],
        preds: Sequence[PendingPrediction],
        wm: float,
        newest: float,
        model_cap: int,
    ) -> bool:
        """:meth:`_bulk` when the rows take their model past its capacity or the partition
        past ``capacity``: the evictions the row-by-row loop would make, planned from counts
        (:meth:`_eviction_plan`) and applied per victim model in one pass (its oldest ``k``),
        with the same queues, counters, journal (same records, same order) and ``_gone``.

        Only when no prediction expires during the batch (False otherwise, nothing done):
        every prediction that becomes the head of a queue on the way (each evicted one after
        the first, and the final head) is within its model's final horizon. Otherwise
        expiry, interleaved with the evictions, would change the counts the plan rests on
        (e.g. the watermark moves past old predictions within the batch)."""
        queues, n = self._queues, len(ids)
        if self._size > self.capacity or len(q) > model_cap:
            return False  # not a state the loop leaves: let it sort that out
        a, others, r = self._eviction_plan(model_id, n, model_cap)
        ks: dict[str, int] = {}
        for m in others:
            ks[m] = ks.get(m, 0) + 1
        final_wm = newest if newest > wm else wm
        horizon = final_wm - self.ttl_of(model_id)
        old = len(q)
        # the model's own heads: its first r + 1 predictions, waiting ones then the rows
        heads = list(itertools.islice(q.values(), r + 1))
        if any(p.timestamp < horizon for _, p in heads):
            return False
        if len(heads) <= r and any(p.timestamp < horizon for p in preds[: r + 1 - old]):
            return False
        for m, k in ks.items():
            h = self._watermarks[m] - self.ttl_of(m)
            if any(p.timestamp < h for _, p in itertools.islice(queues[m].values(), k + 1)):
                return False
        # the plan holds: apply it
        seq, journal, gone = self._seq, self._journal, self._gone
        popped: dict[str, list[tuple[str, _Entry]]] = {}
        by_model = self.by_model
        for m, k in ks.items():
            pop = queues[m].popitem
            popped[m] = [pop(last=False) for _ in range(k)]
            vs = by_model[m]
            vs.evicted += k
            vs.pending -= k
        own_old = min(r, old)
        popitem = q.popitem
        mine = [popitem(last=False) for _ in range(own_old)]
        dropped = r - own_old  # rows evicted on the way
        entries = list(zip(range(seq, seq + n), preds, strict=True))
        q.update(zip(ids[dropped:], entries[dropped:], strict=True))
        if journal is not None or gone is not None:
            removals = self._removal_order(model_id, ids, entries, a, others, mine, popped)
            if journal is not None:
                journal.extend(removals)
            if gone is not None:
                if len(gone) + r + len(others) > self.capacity:
                    self._gone = None  # as _removed, one removal at a time, would leave it
                else:
                    gone.extend(entry[0] for _, _, entry in removals if entry is not None)
        evicted = r + len(others)
        self._seq = seq + n
        st.pending += n - r
        st.evicted += r
        self.evicted += evicted
        self._size += n - evicted
        self._future_runs.pop(model_id, None)
        if newest > wm:
            self._watermarks[model_id] = newest
        return True

    @staticmethod
    def _removal_order(
        model_id: str,
        ids: Sequence[str],
        entries: list[_Entry],
        a: int,
        others: list[str],
        mine: list[tuple[str, _Entry]],
        popped: dict[str, list[tuple[str, _Entry]]],
    ) -> list[tuple[str, str, _Entry | None]]:
        """The journal records of :meth:`_bulk_full`'s plan in the loop's order: each row
        stored, then what it evicted (the victims' oldest in turn; the model's own waiting
        ones first, then its rows)."""
        out: list[tuple[str, str, _Entry | None]] = [(model_id, e, None) for e in ids[:a]]
        its = {m: iter(v) for m, v in popped.items()}
        for i, m in enumerate(others, a):
            event_id, entry = next(its[m])
            out.append((model_id, ids[i], None))
            out.append((m, event_id, entry))
        own = itertools.chain(mine, zip(ids, entries, strict=True))
        for i in range(a + len(others), len(ids)):
            event_id, entry = next(own)
            out.append((model_id, ids[i], None))
            out.append((model_id, event_id, entry))
        return out

    def match(
        self,
        model_id: str,
        event_id: str,
        *,
        count_unmatched: bool = True,
        label_timestamp: float | None = None,
    ) -> PendingPrediction | None:
        """Remove and return the prediction a label refers to, or None (counted unless
        ``count_unmatched`` is false: the caller then parks the label in ``EarlyLabels``).

        With ``label_timestamp`` (the label's event time), the delay since the prediction,
        ``max(label_timestamp - prediction.timestamp, 0)``, goes into the model's
        :meth:`delay_histogram` (a negative one is counted in ``negative_delays``; a
        non-finite one is not recorded).
        """
        q = self._queues.get(model_id)
        entry = None if q is None else q.pop(event_id, None)
        if q is None or entry is None:
            if count_unmatched:
                self.count_unmatched(model_id)
            return None
        self._removed(entry[0])
        if self._journal is not None:
            self._journal.append((model_id, event_id, entry))
        found = entry[1]
        st = self.by_model[model_id]
        st.matched += 1
        st.pending -= 1
        self.matched += 1
        self._size -= 1
        if label_timestamp is not None:
            self._observe_delay(model_id, label_timestamp - found.timestamp)
        self._expire(model_id)  # the match may have uncovered an expired entry
        return found

    def match_many(
        self, labels: Iterable[tuple[str, str, float]]
    ) -> list[PendingPrediction | None]:
        """:meth:`match` with ``count_unmatched=False`` for each ``(model_id, event_id,
        label_timestamp)`` in turn: the same state, counters, journal and histograms, and the
        predictions found (None where there was none). A match leaves every watermark as it
        is, so each model's expiry horizon is looked up once, and a queue is expired only
        when the match uncovered an expired head (as :meth:`_expire` would find it). Nothing
        else reads the match counters or the delay histograms meanwhile, so they are updated
        once per model at the end (the delays by column, :meth:`_Delays.observe_many`).

        Examples
        --------
        >>> a, b = (LabelJoin(capacity=10, ttl_seconds=60.0) for _ in "ab")
        >>> for j in (a, b):
        ...     for e, t in [("x", 0.0), ("y", 10.0), ("z", 70.0)]:
        ...         j.add_prediction("m", e, t, label="1", score=None)
        >>> labels = [("m", "y", 75.0), ("m", "q", 75.0), ("n", "x", 1.0), ("m", "x", 80.0)]
        >>> one = [a.match(m, e, count_unmatched=False, label_timestamp=t) for m, e, t in labels]
        >>> b.match_many(labels) == one, a.snapshot() == b.snapshot(), b.expired
        (True, True, 1)
        """
        out: list[PendingPrediction | None] = []
        append = out.append
        queues, journal = self._queues, self._journal
        horizons: dict[str, float] = {}
        # Per model, the event id at the head of its queue once looked at: within its horizon
        # (else expired then), and so until a match pops it, since the horizon stays put.
        heads: dict[str, str] = {}
        delays: dict[str, list[float]] = {}  # per model, the delays of its matches in order
        removed: list[int] = []  # sequence numbers of the matches not yet noted (_removed)
        try:
            for model_id, event_id, label_ts in labels:
                q = queues.get(model_id)
                entry = None if q is None else q.pop(event_id, None)
                if entry is None:
                    append(None)
                    continue
                removed.append(entry[0])
                if journal is not None:
                    journal.append((model_id, event_id, entry))
                found = entry[1]
                mine = delays.get(model_id)
                if mine is None:
                    mine = delays[model_id] = []
                try:
                    mine.append(label_ts - found.timestamp)
                except Exception:  # matched all the same (as match counts it), no delay
                    mine.append(math.nan)
                    raise
                if q and heads.get(model_id, event_id) == event_id:
                    # the match popped the head (or the head is not known yet): the new one
                    # may be expired
                    horizon = horizons.get(model_id)
                    if horizon is None:
                        wm = self._watermarks[model_id]
                        horizon = horizons[model_id] = wm - self.ttl_of(model_id)
                    if next(iter(q.values()))[1].timestamp < horizon:
                        self._removed_many(removed)  # in order, before the expired ones
                        removed = []
                        self._expire(model_id)
                    if q:
                        heads[model_id] = next(iter(q))
                append(found)
        finally:  # the matches made, whatever happened
            self._removed_many(removed)
            self._matched_many(delays)
        return out

    def _matched_many(self, delays: Mapping[str, Sequence[float]]) -> None:
        """Count the matches of :meth:`match_many` (``delays[model]``: one delay per match of
        that model, in order) and record their delays as :meth:`_observe_delay` would, one at
        a time."""
        for model_id, ds in delays.items():
            st = self.by_model[model_id]
            st.matched += len(ds)
            st.pending -= len(ds)
            self.matched += len(ds)
            self._size -= len(ds)
            self.negative_delays += self._observe_delays(model_id, ds)

    def _observe_delays(self, model_id: str, delays: Sequence[float]) -> int:
        """:meth:`_observe_delay` for each delay in turn, by column; returns how many were
        negative (recorded as 0)."""
        d = np.asarray(delays, dtype=np.float64)
        d = d[np.isfinite(d)]
        if not d.size:
            return 0
        negative = d < 0
        d[negative] = 0.0
        h = self._delays.get(model_id)
        if h is None:
            h = self._delays[model_id] = _Delays()
        h.observe_many(d)
        return int(negative.sum())

    def count_unmatched(self, model_id: str) -> None:
        """Count a label that met no waiting prediction and never will (see :meth:`match`)."""
        self.unmatched_labels += 1
        st = self.by_model.get(model_id)
        if st is None:
            self.labels_unknown_model += 1
        else:
            st.labels_unmatched += 1

    def _observe_delay(self, model_id: str, delay: float) -> None:
        if not math.isfinite(delay):
            return
        if delay < 0:
            self.negative_delays += 1
            delay = 0.0
        d = self._delays.get(model_id)
        if d is None:
            d = self._delays[model_id] = _Delays()
        d.observe(delay)

    def count_early_match(
        self, model_id: str, prediction_timestamp: float, label_timestamp: float | None
    ) -> None:
        """Account for a prediction that met its label on arrival (the label had been read
        first and waited in :class:`EarlyLabels`): it never waits here, but it is matched and
        its label delay is recorded like any other."""
        st = self.by_model.get(model_id)
        if st is None:
            st = self.by_model[model_id] = ModelJoinStats()
            self._queues.setdefault(model_id, OrderedDict())
            self._watermarks.setdefault(model_id, prediction_timestamp)
        st.matched += 1
        self.matched += 1
        if label_timestamp is not None:
            self._observe_delay(model_id, label_timestamp - prediction_timestamp)

    def forget_model(self, model_id: str) -> int:
        """Drop a model that left: its waiting predictions (counted as expired in the
        partition totals, undone by :meth:`rewind` like any removal), its counters, watermark
        and delay histogram. Returns how many predictions were waiting."""
        q = self._queues.pop(model_id, None)
        n = 0
        self._gone = None  # rare: the next split_snapshot reads every queue
        if q is not None:
            n = len(q)
            if self._journal is not None:
                self._journal.extend((model_id, e, entry) for e, entry in q.items())
            self.expired += n
            self._size -= n
        for d in (self.by_model, self._watermarks, self._future_runs, self._delays):
            d.pop(model_id, None)  # type: ignore[attr-defined]
        return n

    def shed(self, n: int) -> int:
        """Evict the ``n`` oldest waiting predictions of all models (by arrival, counted in
        ``evicted``); return how many.

        Used when a snapshot would not fit in one changelog record.
        """
        heads = [(next(iter(q.values()))[0], m) for m, q in self._queues.items() if q]
        heapq.heapify(heads)
        done = 0
        while done < n and heads:
            _, m = heapq.heappop(heads)
            self._evict_oldest(m)
            done += 1
            self._expire(m)
            q = self._queues[m]
            if q:
                heapq.heappush(heads, (next(iter(q.values()))[0], m))
        return done

    # ------------------------------------------------------------------------ internals

    def _removed_many(self, seqs: Sequence[int]) -> None:
        """:meth:`_removed` for each sequence number in turn."""
        gone = self._gone
        if gone is not None and seqs:
            if len(gone) + len(seqs) > self.capacity:
                self._gone = None  # as _removed would leave it at the first one past the bound
            else:
                gone.extend(seqs)

    def _removed(self, seq: int) -> None:
        """Note that the prediction with arrival number ``seq`` left (for split_snapshot)."""
        gone = self._gone
        if gone is not None:
            if len(gone) >= self.capacity:
                self._gone = None
            else:
                gone.append(seq)

    def _fullest(self) -> str:
        """The model holding the most predictions (ties: the smallest model id)."""
        return min((-len(q), m) for m, q in self._queues.items())[1]

    def _evict_oldest(self, model_id: str) -> None:
        event_id, entry = self._queues[model_id].popitem(last=False)
        self._removed(entry[0])
        if self._journal is not None:
            self._journal.append((model_id, event_id, entry))
        self.by_model[model_id].evicted += 1
        self.by_model[model_id].pending -= 1
        self.evicted += 1
        self._size -= 1

    def _expire(self, model_id: str) -> None:
        q = self._queues[model_id]
        horizon = self._watermarks[model_id] - self.ttl_of(model_id)
        n = 0
        while q:
            if next(iter(q.values()))[1].timestamp >= horizon:
                break
            event_id, entry = q.popitem(last=False)
            self._removed(entry[0])
            if self._journal is not None:
                self._journal.append((model_id, event_id, entry))
            n += 1
        if n:
            st = self.by_model[model_id]
            st.expired += n
            st.pending -= n
            self.expired += n
            self._size -= n

    # ----------------------------------------------------------------- marks and rewinds

    def mark(self) -> Mark:
        """A point to come back to with :meth:`rewind` once :meth:`settle` confirms it.

        A snapshot copies every waiting prediction, so taking one at every checkpoint only to
        have a state to rewind to after an aborted transaction costs time in proportion to
        the state. A mark copies the small part (counters, watermarks, histograms: per model)
        and the position in an undo journal that records every prediction stored or removed
        from then on; :meth:`rewind` replays that journal backwards. The journal holds what
        changed since the settled mark only (it is cut at every :meth:`settle`).

        Examples
        --------
        >>> j = LabelJoin(capacity=10, ttl_seconds=60.0)
        >>> j.add_prediction("m", "a", 0.0, label=None, score=None)
        >>> before = j.snapshot()
        >>> j.settle(j.mark())
        >>> j.add_prediction("m", "b", 1.0, label=None, score=None)
        >>> _ = j.match("m", "a")
        >>> j.rewind()
        >>> j.snapshot() == before
        True
        """
        if self._journal is None:
            self._journal = []
        meta = _Meta(
            counters=self._counters(),
            next_seq=self._seq,
            size=self._size,
            stats={m: astuple(st) for m, st in self.by_model.items()},
            watermarks=dict(self._watermarks),
            future_runs=dict(self._future_runs),
            delays={m: (list(d.counts), d.total, d.count) for m, d in self._delays.items()},
            queues=frozenset(self._queues),
        )
        return Mark(len(self._journal), meta)

    def settle(self, mark: Mark) -> None:
        """Make ``mark`` the point :meth:`rewind` returns to (its checkpoint was committed),
        and forget the journal before it."""
        assert self._journal is not None, "settle() of a mark this join did not make"
        del self._journal[: mark.position]
        self._settled = mark.meta

    @property
    def settled(self) -> bool:
        """Whether a settled mark exists for :meth:`rewind` to return to."""
        return self._settled is not None

    def rewind(self) -> None:
        """Back to the settled mark: undo the journal backwards (removed predictions return
        to their place in arrival order, stored ones leave) and restore the small part.
        Costs time in proportion to the queues that lost predictions since the mark."""
        meta, journal = self._settled, self._journal
        if meta is None or journal is None:
            raise RuntimeError("rewind() without a settled mark")
        self._gone = None  # removed predictions return: the next split reads every queue
        reordered: set[str] = set()
        for model_id, event_id, entry in reversed(journal):
            q = self._queues.setdefault(model_id, OrderedDict())  # a forgotten model returns
            if entry is None:
                del q[event_id]
            else:
                q[event_id] = entry
                reordered.add(model_id)
        journal.clear()
        for m in reordered:
            q = self._queues[m]
            self._queues[m] = OrderedDict(sorted(q.items(), key=_arrival))
        for m in [m for m in self._queues if m not in meta.queues]:
            del self._queues[m]
        self._restore_counters(meta.counters)
        self._seq, self._size = meta.next_seq, meta.size
        self.by_model = {m: ModelJoinStats(*st) for m, st in meta.stats.items()}
        self._watermarks = dict(meta.watermarks)
        self._future_runs = dict(meta.future_runs)
        self._delays = {}
        for m, (counts, total, count) in meta.delays.items():
            h = self._delays[m] = _Delays()
            h.counts, h.total, h.count = list(counts), total, count

    def _counters(self) -> list[int]:
        return [getattr(self, name) for name in _COUNTERS]

    def _restore_counters(self, counters: Sequence[int]) -> None:
        if len(counters) != len(_COUNTERS):
            raise ValueError(f"label-join counters: {len(counters)} values, {len(_COUNTERS)} names")
        for name, value in zip(_COUNTERS, counters, strict=True):
            setattr(self, name, int(value))

    # ------------------------------------------------------------------------ snapshots

    def waiting(self) -> list[tuple[str, str, PendingPrediction]]:
        """``(model, event id, prediction)`` of every waiting prediction, in arrival order.

        >>> j = LabelJoin(capacity=10, ttl_seconds=60.0)
        >>> for m, e in [("b", "x"), ("a", "y"), ("b", "z")]:
        ...     j.add_prediction(m, e, 0.0, label=None, score=None)
        >>> [(m, e) for m, e, _ in j.waiting()]
        [('b', 'x'), ('a', 'y'), ('b', 'z')]
        """
        merged = heapq.merge(*(_tagged(m, q) for m, q in self._queues.items()))
        return [(m, e, p) for _, m, e, p in merged]

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state: per model, its watermark, counters, delay histogram and its waiting
        predictions as columns (``event_id``, ``seq``, ``timestamp``, ``label``, ``score``,
        ``model_version``, ``segments``), each in arrival order.

        Columns, not one row per prediction: a partition can hold hundreds of thousands of
        waiting predictions, so its cost is a few C-level passes over each queue.
        """
        models = {
            m: self._model_snapshot(m, list(q), list(q.values())) for m, q in self._queues.items()
        }
        return self._snapshot_of(models, {})

    def split_snapshot(
        self, written: Collection[int]
    ) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        """The state as :meth:`snapshot`, with the waiting predictions of *sealed* chunks kept
        apart: what a checkpoint writes costs what changed, not what is held.

        Arrival sequence numbers ``[k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE)`` form chunk ``k``; a
        chunk is sealed once the next sequence number is past it, and from then on it only
        loses predictions (matched, expired, evicted). The snapshot holds the predictions of
        the open chunk as columns, and per sealed chunk that still has waiting predictions
        (``chunks[str(k)]``) which of its sequence numbers still wait (a bitmap, or the
        offsets when few do). The contents of each sealed chunk are written once, as its own
        record: ``written`` are the chunks already written; the second value holds the
        contents (``{"models": {model: columns}}``) of the live sealed chunks not among them.
        :meth:`from_snapshot` puts the two back together. The work follows what changed too:
        the predictions stored since the last split come from the join's log of the calls that
        stored them, less the ones removed since; the queues are read (from their end) only
        when that is not known (the first split, after a rewind or a forgotten model).

        >>> j = LabelJoin(capacity=10_000, ttl_seconds=1e9)
        >>> for i in range(CHUNK_SIZE + 3):
        ...     j.add_prediction("m", str(i), float(i), label=None, score=None)
        >>> _ = j.match("m", "5")
        >>> snap, fresh = j.split_snapshot(written=())
        >>> len(snap["models"]["m"]["pending"]["event_id"]), list(snap["chunks"]), list(fresh)
        (3, ['0'], [0])
        >>> snap, again = j.split_snapshot(written={0})   # chunk 0 written: only its bitmap
        >>> again, snap["chunks"]["0"][0]
        ({}, 2047)
        >>> LabelJoin.from_snapshot(snap, chunks=fresh).snapshot() == j.snapshot()
        True
        """
        sealed = self._seq - self._seq % CHUNK_SIZE
        live = self._live_chunks
        known = self._gone is not None and written is not None and all(k in written for k in live)
        removed = np.asarray(self._gone if known else (), dtype=np.int64)
        if known:
            # Sealed chunks only lose predictions: drop the ones removed since the last split.
            gone = np.sort(removed[removed < self._live_below])  # each chunk's a run: one pass
            ks, starts = np.unique(gone // CHUNK_SIZE, return_index=True)
            ends = [*starts[1:].tolist(), len(gone)] if len(gone) else []
            for k, a, e in zip(ks.tolist(), starts.tolist(), ends, strict=True):
                offs = live.get(k)
                if offs is not None:
                    offs = offs[~np.isin(offs, gone[a:e] % CHUNK_SIZE)]
                    if len(offs):
                        live[k] = offs
                    else:
                        del live[k]
            below = self._live_below  # only what arrived since is read from the queues
        else:
            live = {}
            below = 0
        models: dict[str, Any] = {}
        offsets: dict[int, list[np.ndarray]] = {}
        fresh: dict[int, dict[str, Any]] = {}
        if known and self._log is not None:
            # What waits from ``below`` on is what the last split held open and what was stored
            # since (the log), less what left since: no need to read the queues.
            stored = self._stored_since(removed)
            for m in self._queues:
                waits = stored.get(m) or _empty_columns()
                n_old = bisect_left(waits["seq"], sealed)
                models[m] = self._model_snapshot_of(m, {k: c[n_old:] for k, c in waits.items()})
                self._chunk_parts(
                    m,
                    waits["seq"],
                    n_old,
                    functools.partial(_rows, waits),
                    written,
                    offsets,
                    fresh,
                )
            return self._split_end(sealed, live, models, offsets, fresh)
        for m, q in self._queues.items():
            # The queue's entries from ``below`` on (all of it when 0), in arrival order:
            # those sealed since the last split (or ever), then the open chunk's.
            if below:
                ids, entries = _suffix(q, below)
            else:
                ids, entries = list(q), list(q.values())
            seqs_list = list(map(_SEQ, entries))
            n_old = bisect_left(seqs_list, sealed)
            models[m] = self._model_snapshot(m, ids[n_old:], entries[n_old:])
            self._chunk_parts(
                m,
                seqs_list,
                n_old,
                functools.partial(_entry_rows, ids, entries),
                written,
                offsets,
                fresh,
            )
        return self._split_end(sealed, live, models, offsets, fresh)

    def _split_end(
        self,
        sealed: int,
        live: dict[int, np.ndarray],
        models: dict[str, Any],
        offsets: dict[int, list[np.ndarray]],
        fresh: dict[int, dict[str, Any]],
    ) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        """:meth:`split_snapshot`'s end: the sealed chunks' live offsets, and what the next
        split starts from."""
        for k, v in offsets.items():
            live[k] = np.sort(np.concatenate(v)).astype(np.int16)  # < CHUNK_SIZE
        self._live_chunks = live = dict(sorted(live.items()))
        self._live_below, self._gone = sealed, []
        self._log, self._logged = [], 0
        self._open = {m: s["pending"] for m, s in models.items()}
        # A chunk whose live offsets did not change since (the same array) keeps its encoding.
        before, self._encoded = self._encoded, {}
        chunks = {}
        for k, offs in live.items():
            hit = before.get(k)
            enc = hit[1] if hit is not None and hit[0] is offs else _encode_offsets(offs)
            self._encoded[k] = (offs, enc)
            chunks[str(k)] = enc
        return self._snapshot_of(models, chunks), dict(sorted(fresh.items()))

    def _stored_since(self, gone: np.ndarray) -> dict[str, dict[str, list[Any]]]:
        """Per model, the columns of its predictions waiting from the last split's open
        chunk on, in arrival order: the open chunk's then and the log's, less ``gone``
        (the sequence numbers that left since)."""
        parts: dict[str, list[dict[str, list[Any]]]] = {
            m: [cols] for m, cols in self._open.items() if cols["seq"]
        }
        for model_id, seq, ids, preds, columns in self._log or ():
            if columns is None:
                columns = [list(map(get, preds)) for get in _COLUMNS.values()]
            cols: dict[str, list[Any]] = {"event_id": list(ids)}
            cols["seq"] = list(range(seq, seq + len(ids)))
            cols.update(zip(_COLUMNS, map(list, columns), strict=True))
            parts.setdefault(model_id, []).append(cols)
        # Which sequence numbers from the last split's ``_live_below`` on left since: a flag
        # per number (one pass over each, where ``np.isin`` sorts them).
        lo = self._live_below
        left = np.zeros(self._seq - lo, dtype=bool)
        left[gone[gone >= lo] - lo] = True
        out: dict[str, dict[str, list[Any]]] = {}
        for m, got in parts.items():
            whole = got[0]
            if len(got) > 1:
                whole = {name: list(_chain(c[name] for c in got)) for name in whole}
            if len(gone):
                keep = ~left[np.asarray(whole["seq"], dtype=np.int64) - lo]
                if not keep.all():
                    mask = keep.tolist()
                    whole = {n: list(itertools.compress(c, mask)) for n, c in whole.items()}
            out[m] = whole
        return out

    @staticmethod
    def _chunk_parts(
        m: str,
        seqs_list: Sequence[int],
        n_old: int,
        columns: Callable[[int, int], dict[str, list[Any]]],
        written: Collection[int],
        offsets: dict[int, list[np.ndarray]],
        fresh: dict[int, dict[str, Any]],
    ) -> None:
        """Model ``m``'s waiting rows ``[:n_old]`` (of sealed chunks, in arrival order;
        ``seqs_list`` their sequence numbers) into the chunks' live ``offsets``, and into
        ``fresh`` the rows of chunks not ``written``: ``columns(lo, hi)`` gives the columns of
        rows ``lo:hi``, asked once, for the rows of those chunks only."""
        if not n_old:
            return
        seqs = np.array(seqs_list[:n_old], dtype=np.int64)
        ks, starts = np.unique(seqs // CHUNK_SIZE, return_index=True)
        ends = [*starts[1:].tolist(), n_old]
        new = []
        for k, a, e in zip(ks.tolist(), starts.tolist(), ends, strict=True):
            offsets.setdefault(k, []).append(seqs[a:e] % CHUNK_SIZE)
            if k not in written:
                new.append((k, a, e))
        if new:
            lo = new[0][1]
            cols = columns(lo, n_old)
            for k, a, e in new:
                part = {name: col[a - lo : e - lo] for name, col in cols.items()}
                fresh.setdefault(k, {"models": {}})["models"][m] = part

    def _model_snapshot(self, m: str, ids: list[str], entries: list[_Entry]) -> dict[str, Any]:
        return self._model_snapshot_of(m, _columns_of(ids, entries))

    def _model_snapshot_of(self, m: str, pending: dict[str, list[Any]]) -> dict[str, Any]:
        d = self._delays.get(m)
        return {
            "watermark": self._watermarks[m],
            "future_run": list(self._future_runs.get(m, (0, 0.0))),
            "stats": list(astuple(self.by_model[m])),
            "delays": None if d is None else [list(d.counts), d.total, d.count],
            "pending": pending,
        }

    def _snapshot_of(self, models: dict[str, Any], chunks: dict[str, Any]) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "ttl_seconds": _enc(self.ttl_seconds),
            "model_capacity": self.model_capacity,
            "overrides": {m: [_enc(t), c] for m, (t, c) in self.overrides.items()},
            "max_future_seconds": _enc(self.max_future_seconds),
            "next_seq": self._seq,
            "models": models,
            "chunks": chunks,
            "counters": self._counters(),
        }

    @classmethod
    def from_snapshot(
        cls, d: dict[str, Any], chunks: Mapping[int, dict[str, Any]] | None = None
    ) -> LabelJoin:
        """Rebuild from :meth:`snapshot` or :meth:`split_snapshot` (with the contents of its
        chunks: ``chunks[k]``); other versions raise ValueError, and so do columns of unequal
        lengths. The predictions of a listed chunk whose contents are missing from ``chunks``
        are counted as evicted (:attr:`lost_on_restore` says how many)."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported label-join snapshot version {d.get('v')!r}")
        j = cls(
            d["capacity"],
            _dec(d["ttl_seconds"], math.inf),
            model_capacity=d["model_capacity"],
            overrides={m: (_dec(t, math.inf), c) for m, (t, c) in d["overrides"].items()},
            max_future_seconds=_dec(d["max_future_seconds"], math.inf),
        )
        wanted = {int(k): _decode_offsets(v) for k, v in d["chunks"].items()}
        older: dict[str, list[tuple[list[Any], list[Any]]]] = {}  # per model: (ids, columns)
        for k in sorted(wanted):
            payload = (chunks or {}).get(k)
            if payload is None:
                continue
            keep = set((wanted.pop(k) + k * CHUNK_SIZE).tolist())
            for m, cols in payload["models"].items():
                ids, columns = _checked_columns(m, cols)
                rows = [i for i, seq in enumerate(cols["seq"]) if seq in keep]
                older.setdefault(m, []).append(
                    ([ids[i] for i in rows], [[c[i] for i in rows] for c in columns])
                )
        size = 0
        for m, s in d["models"].items():
            j.by_model[m] = ModelJoinStats(*s["stats"])
            j._watermarks[m] = s["watermark"]
            run, earliest = s["future_run"]
            if run:
                j._future_runs[m] = (int(run), float(earliest))
            if s["delays"] is not None:
                h = j._delays[m] = _Delays()
                h.counts, h.total, h.count = list(s["delays"][0]), s["delays"][1], s["delays"][2]
            ids, columns = _checked_columns(m, s["pending"])
            for old_ids, old_columns in reversed(older.pop(m, [])):
                ids = old_ids + ids
                columns = [a + b for a, b in zip(old_columns, columns, strict=True)]
            # JSON gives lists where the state held tuples (segments)
            columns[-1] = [g if g is None or type(g) is tuple else tuple(g) for g in columns[-1]]
            preds = itertools.starmap(PendingPrediction, zip(*columns[1:], strict=True))
            j._queues[m] = OrderedDict(zip(ids, zip(columns[0], preds, strict=True), strict=True))
            size += len(ids)
        j._seq, j._size = d["next_seq"], size
        j._restore_counters(d["counters"])
        lost = sum(len(v) for v in wanted.values())
        if lost or older:  # a listed chunk without contents, or contents of an unknown model
            j.lost_on_restore = lost + sum(len(ids) for v in older.values() for ids, _ in v)
            for m, q in j._queues.items():
                st = j.by_model[m]
                gone = st.pending - len(q)
                st.pending, st.evicted = len(q), st.evicted + gone
                j.evicted += gone
        return j


_chain = itertools.chain.from_iterable


def _rows(cols: dict[str, list[Any]], lo: int, hi: int) -> dict[str, list[Any]]:
    """Rows ``lo:hi`` of each column."""
    return {name: col[lo:hi] for name, col in cols.items()}


def _entry_rows(
    ids: list[str], entries: Sequence[_Entry], lo: int, hi: int
) -> dict[str, list[Any]]:
    """:func:`_columns_of` the rows ``lo:hi``."""
    return _columns_of(ids[lo:hi], entries[lo:hi])


def _empty_columns() -> dict[str, list[Any]]:
    """The columns of no waiting prediction, as :func:`_columns_of` gives them."""
    return {"event_id": [], "seq": [], **{name: [] for name in _COLUMNS}}


def _columns_of(ids: list[str], entries: Sequence[_Entry]) -> dict[str, list[Any]]:
    """The snapshot's columns of waiting predictions: ``event_id`` (``ids``, not copied),
    ``seq``, then those of :class:`PendingPrediction` (one pass over the list per column).

    >>> p, r = PendingPrediction(1.0, "x", None), PendingPrediction(2.0, None, 0.5, "v")
    >>> cols = _columns_of(["a", "b"], [(7, p), (9, r)])
    >>> list(cols.items())[:4]
    [('event_id', ['a', 'b']), ('seq', [7, 9]), ('timestamp', [1.0, 2.0]), ('label', ['x', None])]
    >>> cols["score"], cols["model_version"], cols["segments"], _columns_of([], [])["score"]
    ([None, 0.5], [None, 'v'], [None, None], [])
    """
    # Column by column: ``zip(*preds)`` would step through one iterator per prediction for
    # every column, reading a suffix of 250,000 predictions 5 times from memory (4-5 times
    # slower than a pass per column over the list, load_tests/RESULTS.md).
    preds = list(map(_PREDICTION, entries))
    return {
        "event_id": ids,
        "seq": list(map(_SEQ, entries)),
        **{name: list(map(get, preds)) for name, get in _COLUMNS.items()},
    }


def _suffix(q: OrderedDict[str, _Entry], floor: int) -> tuple[list[str], list[_Entry]]:
    """The event ids and entries of ``q`` (in arrival order, so by sequence number) with a
    sequence number of at least ``floor``, read from the end: the cost follows their number,
    not the queue's length. (Windows read in C cost more here: reading an ``OrderedDict``
    from the end is bound by its lookups, and a window reads more than it keeps.)

    >>> q = OrderedDict((e, (s, None)) for e, s in zip("abcde", [1, 4, 6, 9, 12]))
    >>> _suffix(q, 6)[0], _suffix(q, 0)[0], _suffix(q, 13)
    (['c', 'd', 'e'], ['a', 'b', 'c', 'd', 'e'], ([], []))
    """
    ids: list[str] = []
    entries: list[_Entry] = []
    for event_id, entry in reversed(q.items()):
        if entry[0] < floor:
            break
        ids.append(event_id)
        entries.append(entry)
    ids.reverse()
    entries.reverse()
    return ids, entries


def _checked_columns(model_id: str, cols: dict[str, Any]) -> tuple[list[Any], list[list[Any]]]:
    """``(event ids, [seq, *PendingPrediction columns])`` of a snapshot's columns."""
    ids = cols["event_id"]
    columns = [cols["seq"], *(cols[name] for name in _COLUMNS)]
    if any(len(c) != len(ids) for c in columns):
        raise ValueError(f"label-join snapshot: columns of model {model_id!r} differ in length")
    return list(ids), [list(c) for c in columns]


def _encode_offsets(offsets: np.ndarray) -> list[Any]:
    """``[count, "o" | "b", base64]``: sorted offsets in a chunk, as 16-bit offsets when few
    (2 bytes each) or as a bitmap (``CHUNK_SIZE / 8`` bytes).

    >>> enc = _encode_offsets(np.array([0, 5, 2047]))
    >>> enc[:2], _decode_offsets(enc).tolist()
    ([3, 'o'], [0, 5, 2047])
    >>> _decode_offsets(_encode_offsets(np.arange(0, 2048, 2)))[-3:].tolist()
    [2042, 2044, 2046]
    """
    n = len(offsets)
    if 2 * n < CHUNK_SIZE // 8:
        raw = offsets.astype("<u2").tobytes()
        kind = "o"
    else:
        bits = np.zeros(CHUNK_SIZE, dtype=bool)
        bits[offsets] = True
        raw = np.packbits(bits).tobytes()
        kind = "b"
    return [n, kind, base64.b64encode(raw).decode("ascii")]


def _decode_offsets(enc: Sequence[Any]) -> np.ndarray:
    n, kind, data = enc
    raw = base64.b64decode(data, validate=True)
    if kind == "o":
        out = np.frombuffer(raw, dtype="<u2").astype(np.int64)
    elif kind == "b" and len(raw) == CHUNK_SIZE // 8:
        out = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8)))
    else:
        raise ValueError(f"label-join snapshot: unknown chunk encoding {kind!r}")
    if len(out) != n or (len(out) and out.max() >= CHUNK_SIZE):
        raise ValueError("label-join snapshot: chunk offsets do not match their count")
    return out


class EarlyLabels:
    """Labels that arrived before their prediction wait here, briefly and boundedly.

    Predictions and labels come from two topics read side by side, so a label can be read
    before its prediction even when it was produced after it. Such a label waits up to
    ``grace_seconds`` of label event time (behind the newest label seen) and at most
    ``capacity`` of them wait per partition; the ones that expire or are evicted are counted,
    never silently dropped.

    Examples
    --------
    >>> early = EarlyLabels(capacity=2, grace_seconds=30.0)
    >>> early.add("m", "a", 10.0, 1)
    >>> early.take("m", "a"), early.take("m", "a")
    (1, None)
    >>> early.add("m", "b", 10.0, 0)
    >>> early.add("m", "c", 50.0, 0)   # "b" is 40 s behind the newest label: expires
    >>> early.expired, len(early)
    (1, 1)

    A label more than ``max_future_seconds`` ahead of the watermark (a producer with a wrong
    clock) waits but does not move it, as predictions do in :class:`LabelJoin`; otherwise every
    later label would expire on arrival. ``FUTURE_CONFIRM`` such labels in a row confirm the
    jump (the watermark moves to the earliest of them).

    >>> early = EarlyLabels(capacity=10, grace_seconds=30.0, max_future_seconds=3600.0)
    >>> early.add("m", "a", 100.0, 1)
    >>> early.add("m", "far", 9.9e10, 1)   # held back: the watermark stays at 100
    >>> early.add("m", "b", 110.0, 0)
    >>> early.watermark, early.future_timestamps, len(early), early.expired
    (110.0, 1, 3, 0)
    """

    def __init__(
        self, capacity: int, grace_seconds: float, max_future_seconds: float = math.inf
    ) -> None:
        self.capacity = capacity
        self.grace_seconds = grace_seconds
        self.max_future_seconds = max_future_seconds
        self._waiting: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self.watermark = float("-inf")
        self.parked = 0
        self.matched = 0
        self.expired = 0
        self.evicted = 0
        #: Labels too far ahead of the watermark to move it.
        self.future_timestamps = 0
        #: Consecutive such labels, and the earliest of them.
        self._future_run: tuple[int, float] = (0, 0.0)

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, model_id: str, event_id: str, timestamp: float, label: Any) -> None:
        self._waiting[(model_id, event_id)] = (timestamp, label)
        self.parked += 1
        if self.watermark != float("-inf") and timestamp - self.watermark > self.max_future_seconds:
            self.future_timestamps += 1
            run, earliest = self._future_run
            run, earliest = run + 1, (timestamp if run == 0 else min(earliest, timestamp))
            if run >= FUTURE_CONFIRM:
                self.watermark, self._future_run = earliest, (0, 0.0)
            else:
                self._future_run = (run, earliest)
        else:
            self._future_run = (0, 0.0)
            self.watermark = max(self.watermark, timestamp)
        while len(self._waiting) > self.capacity:
            self._waiting.popitem(last=False)
            self.evicted += 1
        horizon = self.watermark - self.grace_seconds
        while self._waiting:
            oldest_ts = next(iter(self._waiting.values()))[0]
            if oldest_ts >= horizon:
                break
            self._waiting.popitem(last=False)
            self.expired += 1

    def expire_behind(self, watermark_of: Callable[[str], float | None]) -> int:
        """Expire the oldest waiting labels that are more than ``grace_seconds`` behind their
        model's prediction watermark (``watermark_of(model)``, None: no prediction yet): the
        predictions up to that time have been read, so theirs is not coming. Stops at the
        first label that may still match (as :meth:`add`'s expiry does); returns how many
        expired (counted in ``expired``).

        Without it, labels whose prediction left the join before they were read (evicted or
        expired there) would wait until the labels' own clock moves on, which it does not
        while the labels partition is held back.

        >>> early = EarlyLabels(capacity=10, grace_seconds=30.0)
        >>> early.add("m", "a", 30.0, 1)
        >>> early.add("m", "b", 50.0, 1)
        >>> early.expire_behind({"m": 70.0}.get), len(early), early.take("m", "b")
        (1, 1, 1)
        """
        n = 0
        waiting, grace = self._waiting, self.grace_seconds
        while waiting:
            (model_id, _), (ts, _) = next(iter(waiting.items()))
            wm = watermark_of(model_id)
            if wm is None or ts >= wm - grace:
                break
            waiting.popitem(last=False)
            n += 1
        self.expired += n
        return n

    def take(self, model_id: str, event_id: str) -> Any | None:
        """The waiting label of this prediction (removed), or None."""
        found = self.take_with_time(model_id, event_id)
        return None if found is None else found[1]

    def take_with_time(self, model_id: str, event_id: str) -> tuple[float, Any] | None:
        """The waiting label of this prediction and its event time (removed), or None."""
        found = self._waiting.pop((model_id, event_id), None)
        if found is None:
            return None
        self.matched += 1
        return found

    def take_many(self, model_id: str, event_ids: Iterable[str]) -> dict[int, tuple[float, Any]]:
        """:meth:`take_with_time` for each event id in turn: the labels found (removed), with
        their event time, by position in ``event_ids``.

        >>> early = EarlyLabels(capacity=10, grace_seconds=30.0)
        >>> early.add("m", "b", 5.0, 1)
        >>> early.take_many("m", ["a", "b", "b"]), early.matched
        ({1: (5.0, 1)}, 1)
        """
        if not self._waiting:
            return {}
        pop = self._waiting.pop
        found = {}
        for i, event_id in enumerate(event_ids):
            hit = pop((model_id, event_id), None)
            if hit is not None:
                found[i] = hit
        self.matched += len(found)
        return found

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": EARLY_SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "grace_seconds": self.grace_seconds,
            "waiting": [[m, e, ts, lab] for (m, e), (ts, lab) in self._waiting.items()],
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "counters": [self.parked, self.matched, self.expired, self.evicted],
            "max_future_seconds": _enc(self.max_future_seconds),
            "future": [self.future_timestamps, *self._future_run],
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> EarlyLabels:
        if d.get("v") != EARLY_SNAPSHOT_VERSION:
            raise ValueError(f"unsupported early-labels snapshot version {d.get('v')!r}")
        e = cls(d["capacity"], d["grace_seconds"], _dec(d["max_future_seconds"], math.inf))
        for m, ev, ts, lab in d["waiting"]:
            e._waiting[(m, ev)] = (ts, lab)
        e.watermark = float("-inf") if d["watermark"] is None else d["watermark"]
        e.parked, e.matched, e.expired, e.evicted = d["counters"]
        e.future_timestamps, run, earliest = d["future"]
        e._future_run = (int(run), float(earliest))
        return e
