"""The monitor's own metrics, registered on a registry given by the caller (never the global one).

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = Instruments(reg)
>>> m.events_consumed.labels(topic="predictions").inc(3)
>>> reg.get_sample_value("stream_monitor_events_consumed_total", {"topic": "predictions"})
3.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_monitor import __version__
from stream_monitor.events.decode import layout_stats

__all__ = ["DecodeLayouts", "Instruments"]


class Instruments:
    """Counters, gauges and histograms updated by the application loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "stream_monitor"
        self.build_info = Info("build", "stream-monitor version", namespace=ns, registry=registry)
        self.build_info.info({"version": __version__})
        self.events_consumed = Counter(
            "events_consumed",
            "Records read from the input topics.",
            ["topic"],
            namespace=ns,
            registry=registry,
        )
        self.events_invalid = Counter(
            "events_invalid",
            "Input records sent to the dead-letter topic, by reason.",
            ["topic", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.dead_letters_published = Counter(
            "dead_letters_published",
            "Dead-letter records acknowledged by the broker.",
            namespace=ns,
            registry=registry,
        )
        self.alerts_published = Counter(
            "alerts_published",
            "Alert events acknowledged by the broker.",
            ["kind", "status"],
            namespace=ns,
            registry=registry,
        )
        self.retrain_triggers = Counter(
            "retrain_triggers_published",
            "Retraining triggers (topics.retrain) acknowledged by the broker.",
            namespace=ns,
            registry=registry,
        )
        self.delivery_failures = Counter(
            "delivery_failures",
            "Produce attempts that failed and were retried.",
            ["topic"],
            namespace=ns,
            registry=registry,
        )
        self.consumer_errors = Counter(
            "consumer_errors",
            "Errors reported by the Kafka consumer.",
            namespace=ns,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "batch_processing_seconds",
            "Time to decode, monitor and publish one batch.",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.gc_pause_seconds = Histogram(
            "gc_pause_seconds",
            "Time one cyclic garbage collection held the process, by generation (2: a full "
            "collection, which walks every object the collector tracks; the loop stands still "
            "meanwhile).",
            ["generation"],
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.batch_events = Histogram(
            "batch_events",
            "Records per consumed batch.",
            namespace=ns,
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
        )
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records behind the partition's high watermark (messages).",
            ["topic", "partition"],
            namespace=ns,
            registry=registry,
        )
        self.last_event_timestamp = Gauge(
            "last_event_timestamp_seconds",
            "Event time of the newest record processed.",
            ["topic"],
            namespace=ns,
            registry=registry,
        )
        self.last_batch_timestamp = Gauge(
            "last_batch_timestamp_seconds",
            "Wall-clock time the last batch finished.",
            namespace=ns,
            registry=registry,
        )
        self.checkpoints = Counter(
            "checkpoints",
            "Checkpoints committed (state, outputs and offsets together).",
            namespace=ns,
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "checkpoint_failures",
            "Checkpoints that could not be committed, by reason.",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "checkpoint_seconds",
            "Time to snapshot and commit one checkpoint.",
            namespace=ns,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.checkpoint_bytes = Histogram(
            "checkpoint_snapshot_bytes",
            "Size of one partition's signed snapshot.",
            namespace=ns,
            registry=registry,
            buckets=(1e3, 1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 6e7),
        )
        self.restores = Counter(
            "state_restores",
            "Partition state restorations at assignment, by outcome "
            "(restored, empty, or why the snapshot was refused).",
            ["outcome"],
            namespace=ns,
            registry=registry,
        )
        self.transactions_aborted = Counter(
            "transactions_aborted",
            "Transactions aborted (state rewound to the checkpoint).",
            namespace=ns,
            registry=registry,
        )
        self.label_pauses = Counter(
            "label_partition_pauses",
            "Times a labels partition was paused for running ahead "
            "of its predictions partition (event-time alignment).",
            namespace=ns,
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "assigned_partitions",
            "Input partitions assigned to this instance.",
            ["topic"],
            namespace=ns,
            registry=registry,
        )
        registry.register(DecodeLayouts())
        self._gc_pauses = [self.gc_pause_seconds.labels(generation=str(g)) for g in range(3)]

    def observe_gc(self, generation: int, seconds: float) -> None:
        """One collection's pause (``gc_tuning.fewer_collections``'s ``on_pause``).

        >>> from prometheus_client import CollectorRegistry
        >>> reg = CollectorRegistry()
        >>> Instruments(reg).observe_gc(2, 0.3)
        >>> reg.get_sample_value(
        ...     "stream_monitor_gc_pause_seconds_bucket", {"generation": "2", "le": "0.25"}
        ... ), reg.get_sample_value("stream_monitor_gc_pause_seconds_sum", {"generation": "2"})
        (0.0, 0.3)
        """
        self._gc_pauses[generation].observe(seconds)


class DecodeLayouts(Collector):
    """The decoder's feature layouts (process-wide, read at scrape time): a key whose
    predictions keep their usual feature names decodes them straight into rows; without its
    layout (too many names in all, or too many events of other names) each event decodes into
    a dict, which costs more CPU (some 15 % per record in the throughput scenario), and these
    series say so.

    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> reg.register(DecodeLayouts())
    >>> reg.get_sample_value("stream_monitor_decode_layout_names_max")
    65536.0
    """

    def describe(self) -> list[Metric]:
        # The families (cheap to read): a scrape that asks for some series by name finds them.
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        stats = layout_stats()
        yield GaugeMetricFamily(
            "stream_monitor_decode_layouts",
            "Feature layouts the decoder made: a key's usual feature names, decoded straight "
            "into a row.",
            value=float(stats.layouts),
        )
        yield GaugeMetricFamily(
            "stream_monitor_decode_layout_names",
            "Feature names the decoder's layouts hold; past "
            "stream_monitor_decode_layout_names_max no new layout is made.",
            value=float(stats.names),
        )
        yield GaugeMetricFamily(
            "stream_monitor_decode_layout_names_max",
            "The cap on the names the decoder's layouts hold.",
            value=float(stats.names_cap),
        )
        misses = CounterMetricFamily(
            "stream_monitor_decode_layout_misses",
            "Batches of a key's predictions decoded without its layout, each event into a "
            "dict at more CPU, by reason: names_cap (the layouts' names at their cap) or "
            "misfits (too many events of other feature names than the layout's).",
            labels=["reason"],
        )
        for reason, n in sorted(stats.misses.items()):
            misses.add_metric([reason], float(n))
        yield misses
