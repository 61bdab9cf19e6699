"""Application.checkpoint without Kafka: which snapshots it takes (a fake Checkpoint)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.app import Application
from stream_monitor.checkpoint import OutputRecord
from stream_monitor.config import MonitorConfig
from stream_monitor.monitor.partition import PartitionState


class _FakeCheckpoint:
    def __init__(self) -> None:
        self.committed: list[list[OutputRecord]] = []

    def has_pending(self) -> bool:
        return True

    def commit(self, records: list[OutputRecord]) -> bool:
        self.committed.append(records)
        return True


class _CountingState(PartitionState):
    snapshots = 0

    def snapshot(self) -> dict[str, Any]:
        type(self).snapshots += 1
        return super().snapshot()


@pytest.mark.parametrize(
    ("guarantee", "hmac_key", "snapshots"),
    [
        ("at_least_once", None, 0),  # nothing would use it: not taken
        ("exactly_once", None, 1),  # the state to rewind to after an aborted transaction
        ("at_least_once", "k" * 32, 1),  # the changelog record
    ],
)
def test_checkpoint_takes_a_snapshot_only_when_something_uses_it(
    guarantee: str, hmac_key: str | None, snapshots: int
) -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "processing_guarantee": guarantee,
            "checkpoint": {"hmac_key": hmac_key},
        }
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    fake = _FakeCheckpoint()
    app._ckpt = fake  # type: ignore[assignment]
    _CountingState.snapshots = 0
    app.states[0] = _CountingState(0, cfg)
    app._dirty.add(0)
    assert app.checkpoint()
    assert _CountingState.snapshots == snapshots
    assert len(fake.committed) == 1 and len(fake.committed[0]) == (1 if hmac_key else 0)
    assert not app._dirty and (0 in app._base) == (snapshots == 1)
    assert app.registry.get_sample_value("stream_monitor_checkpoints_total") == 1.0
