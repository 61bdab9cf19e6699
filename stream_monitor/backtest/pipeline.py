"""The backtest's loops: feed files or a topic range through :class:`Replay`, then report.

:func:`replay_files` merges the two JSON Lines files in event-time order and feeds them in
batches; :func:`replay_topics` reads a range of both input topics with an assigned consumer and
the live monitor's label alignment (:class:`~stream_monitor.alignment.LabelAlignment`);
:func:`run_replay` runs either one and writes ``alerts.jsonl`` and ``report.html``.
:class:`Progress` prints the progress line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from stream_monitor.alerts.sinks import AlertSink, JsonLinesAlertSink
from stream_monitor.alignment import LabelAlignment
from stream_monitor.backtest.dead_letters import FILE_NAME as DEAD_LETTERS_FILE
from stream_monitor.backtest.dead_letters import DeadLetterLog
from stream_monitor.backtest.report import render_report
from stream_monitor.backtest.result import ReplayResult
from stream_monitor.backtest.series import DEFAULT_SERIES_CAP
from stream_monitor.backtest.sources import (
    Partitioner,
    Position,
    _cut,
    _JsonLines,
    _replay_consumer,
    _resolve,
    partition_for,
)
from stream_monitor.backtest.state import Kind, Replay
from stream_monitor.blas_threads import one_blas_thread
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError, StreamMonitorError, TopicsNotReady
from stream_monitor.events.live import AnyLabel, AnyPrediction
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent
from stream_monitor.gc_tuning import fewer_collections
from stream_monitor.kafka.batches import next_batch
from stream_monitor.reference import load_profiles

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "IDLE_TIMEOUT_SECONDS",
    "Progress",
    "ReplayError",
    "replay_files",
    "replay_topics",
    "run_replay",
]

log = logging.getLogger(__name__)

#: Records per batch from files: the monitor's per-batch work (per model, feature and detector)
#: is shared by more records in larger batches, and results do not depend on batch sizes
#: (tests/unit/test_batch_invariance.py).
DEFAULT_BATCH_SIZE = 10_000
#: A topic replay that receives nothing for this long while records remain is an error.
IDLE_TIMEOUT_SECONDS = 60.0

_E = TypeVar("_E", PredictionEvent, LabelEvent)


class ReplayError(StreamMonitorError):
    """The replay cannot go on (input unreadable, broker unreachable, no progress)."""


# --- progress -----------------------------------------------------------------------------------
class Progress:
    """At most one line per ``interval`` seconds on ``stream`` (when enabled), and a final one.

    Only for display: the wall clock never paces the replay.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        enabled: bool | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else enabled
        self.tty = bool(isatty())
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last = self.started

    def update(self, events: int, fraction: float | None, alerts: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write(self._line(events, fraction, alerts, now), final=False)

    def finish(self, events: int, alerts: int) -> None:
        self._write(self._line(events, 1.0, alerts, self.clock(), final=True), final=True)

    def _line(
        self, events: int, fraction: float | None, alerts: int, now: float, final: bool = False
    ) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = events / elapsed
        parts = [f"replay: {events:,} events"]
        if fraction is not None and not final:
            parts.append(f"{100 * min(max(fraction, 0.0), 1.0):.1f}%")
        parts.append(f"{rate:,.0f} events/s")
        parts.append(f"{alerts:,} alerts")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif fraction is not None and 0 < fraction < 1:
            parts.append(f"ETA {_duration(elapsed * (1 - fraction) / fraction)}")
        return ", ".join(parts)

    def _write(self, line: str, *, final: bool) -> None:
        if self.tty and self.enabled:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- files --------------------------------------------------------------------------------------
def replay_files(
    replay: Replay,
    predictions: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    partitions: int | None = None,
    partitioner: Partitioner = "murmur2",
    progress: Progress | None = None,
) -> None:
    """Feed the recorded predictions (and labels) to ``replay`` in event-time order.

    Both files are opened before anything is processed (OSError for a missing one). Each file
    is decoded at most one batch ahead of the merge.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    routes: dict[str, int] = {}

    def grouped(events: Sequence[_E | None]) -> dict[int, list[_E]]:
        if partitions is None:
            valid = [ev for ev in events if ev is not None]
            return {0: valid} if valid else {}
        out: dict[int, list[_E]] = {}
        for ev in events:
            if ev is None:
                continue
            part = routes.get(ev.model_id)
            if part is None:
                part = routes[ev.model_id] = partition_for(
                    ev.model_id.encode(), partitions, partitioner
                )
            out.setdefault(part, []).append(ev)
        return out

    topics = replay.cfg.topics
    sources = [_JsonLines(predictions, "prediction", topics.predictions, replay)]
    try:
        if labels is not None:
            sources.append(_JsonLines(labels, "label", topics.labels, replay))
        total = sum(s.size for s in sources)
        # Decoded, not yet processed: events (None for a bad line) and merge keys per file.
        events: list[list[Any]] = [[] for _ in sources]
        keys: list[list[float]] = [[] for _ in sources]
        while True:
            for s, evs, ks in zip(sources, events, keys, strict=True):
                if len(evs) < batch_size and not s.eof:
                    more, more_keys = s.read(batch_size - len(evs))
                    evs += more
                    ks += more_keys
            if not any(events):
                break
            label_keys = keys[1] if labels is not None else []
            i = _cut(keys[0], label_keys, batch_size)
            j = min(batch_size - i, len(label_keys))
            replay.process(
                grouped(events[0][:i]), grouped(events[1][:j]) if labels is not None else {}
            )
            del events[0][:i], keys[0][:i]
            if labels is not None:
                del events[1][:j], keys[1][:j]
            if progress is not None:
                done = sum(s.done_bytes for s in sources)
                progress.update(replay.events, done / total if total else None, len(replay.alerts))
    finally:
        for s in sources:
            s.close()


# --- topics -------------------------------------------------------------------------------------
def replay_topics(
    replay: Replay,
    *,
    start: Position | None = None,
    end: Position | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
) -> dict[str, dict[int, tuple[int, int]]]:
    """Replay ``[start, end)`` of both input topics (default: everything there at the start).

    ``batch_size`` (default: the config's ``batch_size`` and ``batch_max_records``, as the live
    monitor consumes a backlog: see :func:`~stream_monitor.kafka.batches.next_batch`) is the
    most records taken per ``consume`` call and processed as one batch. Returns the
    ``(start, end)`` offsets read, by topic and partition.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    from stream_monitor.kafka import clients

    cfg = replay.cfg
    t = cfg.topics
    batch = cfg.batch_size if batch_size is None else batch_size
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    # As the live monitor drains a backlog: after a full consume call, the records already
    # fetched join the batch, up to batch_max_records (an explicit batch_size is exact).
    most = max(batch, cfg.batch_max_records) if batch_size is None else batch
    # Client logs off for this first look: an unreachable broker is one error, not a log flood.
    admin = AdminClient({**clients.client_config(cfg), "log_level": 0})
    try:
        n = clients.check_input_topics(admin, cfg)
    except TopicsNotReady as exc:
        raise ConfigError(str(exc)) from None
    except KafkaException as exc:
        why = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ReplayError(
            f"cannot read topic metadata from {cfg.bootstrap_servers}: {why}"
        ) from None
    consumer = _replay_consumer(cfg)
    try:
        tps = [(topic, p) for topic in (t.predictions, t.labels) for p in range(n)]
        marks = {
            tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=30.0) for tp in tps
        }
        starts = _resolve(consumer, tps, start, "low", marks)
        ends = _resolve(consumer, tps, end, "high", marks)
        todo = {tp for tp in tps if starts[tp] < ends[tp]}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        position = dict(starts)
        consumer.assign([TopicPartition(*tp, starts[tp]) for tp in tps if tp in todo])
        # The live monitor's label alignment, with the end of the range as the backlog.
        alignment = LabelAlignment(cfg, on_pause=lambda: None)
        last_record = time.monotonic()

        def finished(tp: tuple[str, int]) -> None:
            todo.discard(tp)
            with contextlib.suppress(Exception):
                consumer.pause([TopicPartition(*tp)])

        while todo:
            msgs = next_batch(consumer.consume, batch_size=batch, max_records=most, timeout=0.5)
            raw: dict[tuple[str, int], list[Any]] = {}
            for m in msgs:
                err = m.error()
                tp = (m.topic(), m.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if tp in todo:  # nothing more to read now (read_committed: up to LSO)
                            position[tp] = max(position[tp], ends[tp])
                            finished(tp)
                    elif err.fatal():
                        raise ReplayError(f"consumer error: {err.str()}")
                    else:
                        log.warning("consume error=%s", err.str())
                    continue
                offset = m.offset()
                if tp not in todo or offset >= ends[tp]:
                    if tp in todo:
                        finished(tp)
                    continue
                position[tp] = offset + 1
                if offset + 1 >= ends[tp]:
                    finished(tp)
                raw.setdefault(tp, []).append(m)
            # Decoded a topic partition at a time, as the live monitor decodes its batches.
            preds: dict[int, list[AnyPrediction]] = {}
            labs: dict[int, list[AnyLabel]] = {}
            for (topic, p), records in raw.items():
                kind: Kind = "prediction" if topic == t.predictions else "label"
                events = [ev for ev in replay.decode_many(records, kind) if ev is not None]
                if not events:
                    continue
                alignment.observe(topic, p, max(ev.timestamp for ev in events))
                if kind == "prediction":
                    preds[p] = cast(list[AnyPrediction], events)
                else:
                    labs[p] = cast(list[AnyLabel], events)
            if msgs:
                last_record = time.monotonic()
            elif time.monotonic() - last_record > idle_timeout:
                raise ReplayError(
                    f"no records for {idle_timeout:.0f} s with partitions left to read: "
                    + ", ".join(f"{a}[{b}]" for a, b in sorted(todo))
                )
            if preds or labs:
                replay.process(preds, labs)
            # labels partitions read to the end of the range stay as finished() left them
            alignment.paused.intersection_update(p for topic, p in todo if topic == t.labels)
            alignment.align(
                consumer,
                {p: st for p, st in replay.states.items() if (t.labels, p) in todo},
                has_backlog=lambda p: (t.predictions, p) in todo,
            )
            if progress is not None:
                done = sum(position[tp] - starts[tp] for tp in tps if starts[tp] < ends[tp])
                progress.update(replay.events, done / total if total else None, len(replay.alerts))
    finally:
        consumer.close()
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for (topic, p), s in starts.items():
        out.setdefault(topic, {})[p] = (s, ends[(topic, p)])
    return out


# --- the run ------------------------------------------------------------------------------------
def run_replay(
    cfg: MonitorConfig,
    out_dir: str | os.PathLike[str],
    *,
    predictions: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    from_kafka: bool = False,
    start: Position | None = None,
    end: Position | None = None,
    batch_size: int | None = None,
    partitions: int | None = None,
    partitioner: Partitioner = "murmur2",
    progress: Progress | None = None,
    config_path: str | None = None,
    series_cap: int = DEFAULT_SERIES_CAP,
    alert_sinks: Sequence[AlertSink] = (),
) -> ReplayResult:
    """Run a replay and write ``alerts.jsonl``, ``report.html`` and the invalid records
    (``dead_letters.jsonl``, :mod:`~stream_monitor.backtest.dead_letters`) to ``out_dir``.

    ``alert_sinks`` also receive every alert as it is raised (e.g. the HTTP sinks of
    ``stream-monitor forward``, to see a backtest's pages in a staging Alertmanager); they are
    closed at the end.

    ``batch_size`` defaults to :data:`DEFAULT_BATCH_SIZE` records for files and to the
    config's ``batch_size`` (the live monitor's) for topics. Raises ConfigError (bad profiles,
    topics), OSError (files) or ReplayError.
    """
    if (predictions is None) == (not from_kafka):
        raise ValueError("give either predictions (files) or from_kafka, not both")
    if predictions is not None:
        for path in (predictions, labels):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")
    profiles = load_profiles(cfg.references)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    offsets = None
    with (
        fewer_collections(),
        one_blas_thread(),
        open(out / "alerts.jsonl", "wb") as timeline,
        open(out / DEAD_LETTERS_FILE, "wb") as dead,
    ):
        # The alerts topic's serialisation; not published, so published_at stays null.
        sinks: list[AlertSink] = [JsonLinesAlertSink(timeline), *alert_sinks]

        def write(alert: AlertEvent) -> None:
            for sink in sinks:
                sink.write([alert])

        replay = Replay(
            cfg,
            profiles=profiles,
            series_cap=series_cap,
            on_alert=write,
            dead_letters=DeadLetterLog(dead),
        )
        if predictions is not None:
            replay_files(
                replay,
                predictions,
                labels,
                batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                partitions=partitions,
                partitioner=partitioner,
                progress=progress,
            )
            source = str(predictions) + (f" + {labels}" if labels is not None else "")
            if partitions is not None:
                source += f" ({partitions} partitions, {partitioner})"
        else:
            offsets = replay_topics(
                replay, start=start, end=end, batch_size=batch_size, progress=progress
            )
            t = cfg.topics
            source = f"topics {t.predictions} + {t.labels} on {cfg.bootstrap_servers}"
            span = _offset_span(offsets)
            if span:
                source += f" ({span})"
        for sink in sinks:
            sink.close()
    wall = time.perf_counter() - started
    if progress is not None:
        progress.finish(replay.events, len(replay.alerts))
    result = ReplayResult(
        config_path=config_path,
        input=source,
        replay=replay,
        wall_seconds=wall,
        out_dir=out,
        offsets=offsets,
    )
    (out / "report.html").write_text(render_report(result), encoding="utf-8")
    return result


def _offset_span(offsets: Mapping[str, Mapping[int, tuple[int, int]]]) -> str:
    parts = []
    for topic, parts_ in offsets.items():
        ranges = ",".join(f"{p}:{s}-{e}" for p, (s, e) in sorted(parts_.items()))
        parts.append(f"{topic} {ranges}")
    return "; ".join(parts)
