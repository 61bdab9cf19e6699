"""Backtest: replay recorded events through the live pipeline, as fast as the CPU allows.

``stream-monitor replay`` feeds recorded events to exactly what ``stream-monitor run`` runs on
a batch::

    bytes -> decode_record (limits.max_event_bytes) -> PartitionState.process -> alert events

with the same :class:`~stream_monitor.config.MonitorConfig` and the same reference profiles
(:func:`stream_monitor.reference.load_profiles`, as the Application loads them). There is no
sleeping and no wall clock in the pipeline: event time is the only clock, so a month of
events replays in minutes. Records that do not decode are counted by reason (the live monitor
would dead-letter them) and never stop the replay.

Two inputs:

* **JSON Lines files** (:func:`replay_files`): ``--predictions`` and optionally ``--labels``,
  one raw record value per line, exactly as published on the topic. The two files are merged
  in event-time order (stable; a line that does not decode keeps its place in its own file)
  and fed in batches of ``batch_size`` records, predictions first within a batch as the
  Application does. One ``PartitionState`` holds every model, or, with ``partitions=N``, one
  per partition number as the producer's partitioner would pick it for the key ``model_id``.
* **A range of the input topics** (:func:`replay_topics`): an assigned consumer (no group
  membership, no commits) reads both topics together, from ``start`` to the end offsets
  captured when the replay starts, and feeds batches as they are read, one ``PartitionState``
  per partition, with the live monitor's label alignment.

Observations are collected through ``PartitionState.observer`` into bounded series
(:class:`SeriesRecorder`: at most ``cap`` points each, by decimation) for the HTML report;
incidents (firing -> resolved) are rebuilt from the alert events with the peak value of their
signal (:class:`IncidentLog`). See docs/backtest.md.

The modules, each importing only those above it:

* :mod:`~stream_monitor.backtest.series`: :class:`Series`, :class:`SeriesRecorder`,
  :class:`Incident`, :class:`IncidentLog` (what a replay records);
* :mod:`~stream_monitor.backtest.dead_letters`: :class:`DeadLetterLog` (the invalid records,
  ``dead_letters.jsonl``) and :func:`hint` (what usually causes a dead-letter reason);
* :mod:`~stream_monitor.backtest.state`: :class:`Replay`, the pipeline state (partition
  states, decoding, counters; no I/O of its own);
* :mod:`~stream_monitor.backtest.result`: :class:`ReplayResult`, what a replay read and
  produced;
* :mod:`~stream_monitor.backtest.sources`: where records come from (JSON Lines files and their
  merge, topic ranges and :class:`Position`, :func:`murmur2` / :func:`partition_for`);
* :mod:`~stream_monitor.backtest.report` (the HTML report) and
  :mod:`~stream_monitor.backtest.summary` (:func:`format_summary`), which read the result;
* :mod:`~stream_monitor.backtest.pipeline`: the loops (:func:`replay_files`,
  :func:`replay_topics`, :func:`run_replay`) and :class:`Progress`.

The public names are re-exported here.
"""

from __future__ import annotations

from stream_monitor.backtest.dead_letters import DeadLetterLog, hint
from stream_monitor.backtest.pipeline import (
    DEFAULT_BATCH_SIZE,
    Progress,
    ReplayError,
    replay_files,
    replay_topics,
    run_replay,
)
from stream_monitor.backtest.result import ReplayResult
from stream_monitor.backtest.series import (
    DEFAULT_SERIES_CAP,
    Incident,
    IncidentLog,
    Scope,
    Series,
    SeriesKey,
    SeriesRecorder,
)
from stream_monitor.backtest.sources import (
    Partitioner,
    Position,
    murmur2,
    parse_position,
    partition_for,
)
from stream_monitor.backtest.state import Replay
from stream_monitor.backtest.summary import format_summary

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SERIES_CAP",
    "DeadLetterLog",
    "Incident",
    "IncidentLog",
    "Partitioner",
    "Position",
    "Progress",
    "Replay",
    "ReplayError",
    "ReplayResult",
    "Scope",
    "Series",
    "SeriesKey",
    "SeriesRecorder",
    "format_summary",
    "hint",
    "murmur2",
    "parse_position",
    "partition_for",
    "replay_files",
    "replay_topics",
    "run_replay",
]
