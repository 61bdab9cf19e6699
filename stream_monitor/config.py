"""Frozen configuration models. The environment and files are read only at the entry point (CLI).

Examples
--------
>>> cfg = MonitorConfig(bootstrap_servers="127.0.0.1:9092")
>>> cfg.topics.predictions, cfg.drift.reference_size
('predictions', 1000)
>>> MonitorConfig.model_validate({"bootstrap_servers": "x:1", "drift": {"window_size": 0}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MonitorConfig
...
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "CheckpointConfig",
    "DetectorConfig",
    "DriftConfig",
    "KafkaSecurity",
    "LabelJoinConfig",
    "LimitsConfig",
    "MonitorConfig",
    "TopicsConfig",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(_Frozen):
    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "alerts"
    dead_letter: str = "stream-monitor-dead-letter"
    #: Partitions and replication for the output topics the monitor creates when missing.
    output_partitions: int = Field(default=3, ge=1)
    output_replication_factor: int = Field(default=1, ge=1)


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


class DriftConfig(_Frozen):
    #: The first ``reference_size`` events of a model form its reference.
    reference_size: int = Field(default=1000, ge=10)
    #: Tumbling window, in events of one model, compared with the reference.
    window_size: int = Field(default=1000, ge=10)
    n_bins: int = Field(default=10, ge=2, le=100)
    top_k_categories: int = Field(default=20, ge=1, le=1000)
    psi_threshold: float = Field(default=0.25, gt=0)
    #: Hysteresis: an incident resolves only once the score falls below this.
    psi_resolve_threshold: float = Field(default=0.1, gt=0)
    #: Data quality: fire when a window's missing ratio exceeds the reference's by this much.
    missing_increase_threshold: float = Field(default=0.1, gt=0, le=1)
    detectors: DetectorConfig = DetectorConfig()


class LabelJoinConfig(_Frozen):
    #: Predictions wait this long (event time) for their label, then expire.
    ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: At most this many predictions wait per partition; the oldest are evicted first.
    capacity: int = Field(default=200_000, ge=1)
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


class LimitsConfig(_Frozen):
    """Bounds that keep state and metric series finite whatever the input."""

    max_models_per_partition: int = Field(default=50, ge=1)
    max_features_per_model: int = Field(default=100, ge=1)
    max_event_bytes: int = Field(default=1_048_576, ge=1024)


class KafkaSecurity(_Frozen):
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


class CheckpointConfig(_Frozen):
    """Per-partition state checkpoints in a compacted changelog topic (see checkpoint.py).

    Snapshots are signed with HMAC-SHA256 using ``hmac_key`` and nothing unsigned or forged is
    ever loaded (they contain pickled river detectors). Without a key, state is not
    checkpointed: a restart or rebalance re-learns the reference (a warning says so).
    """

    #: A checkpoint is taken (and, with exactly-once, the transaction committed) after this
    #: long or this many input records, whichever comes first. It bounds alert latency under
    #: exactly-once, since alerts become visible when their transaction commits.
    interval_seconds: float = Field(default=5.0, gt=0)
    interval_events: int = Field(default=50_000, ge=1)
    hmac_key: SecretStr | None = None
    #: Default: ``<group_id>-changelog``.
    topic: str | None = None
    replication_factor: int = Field(default=1, ge=1)
    restore_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Timeout of each transactional call; one that blocks for twice this long makes the
    #: monitor replace its producer and rewind to the last checkpoint.
    commit_timeout_seconds: float = Field(default=30.0, gt=0)


class MonitorConfig(_Frozen):
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
    drift: DriftConfig = DriftConfig()
    labels: LabelJoinConfig = LabelJoinConfig()
    limits: LimitsConfig = LimitsConfig()
    security: KafkaSecurity = KafkaSecurity()
    batch_size: int = Field(default=2000, ge=1)
    batch_timeout_seconds: float = Field(default=0.5, gt=0)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    #: Extra librdkafka settings, passed through unchanged.
    consumer_overrides: dict[str, Any] = {}
    producer_overrides: dict[str, Any] = {}


def load_config(
    path: str | Path | None, *, defaults: dict[str, Any] | None = None, **overrides: Any
) -> MonitorConfig:
    """Read a TOML file (optional), fill top-level ``defaults`` it lacks, and apply the
    command-line ``overrides`` that are not None."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        with open(path, "rb") as fh:
            data.update(tomllib.load(fh))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return MonitorConfig.model_validate(data)
