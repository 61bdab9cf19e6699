"""Application.checkpoint without Kafka: which snapshots it takes (a fake Checkpoint)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.app import Application
from stream_monitor.checkpoint import OutputRecord, TransactionAborted
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
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

    def snapshot(self, *, join: bool = True) -> dict[str, Any]:
        type(self).snapshots += 1
        return super().snapshot(join=join)


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
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    assert _CountingState.snapshots == snapshots
    assert len(fake.committed) == 1 and len(fake.committed[0]) == (1 if hmac_key else 0)
    assert not app.assignment.dirty and (0 in app.assignment.base) == (snapshots == 1)
    assert app.registry.get_sample_value("stream_monitor_checkpoints_total") == 1.0


class _AbortingCheckpoint(_FakeCheckpoint):
    """Commits once, then every transaction aborts."""

    def commit(self, records: list[OutputRecord]) -> bool:
        if self.committed:
            raise TransactionAborted("fenced")
        return super().commit(records)


def _predictions(lo: int, hi: int) -> list[PredictionEvent]:
    return [
        PredictionEvent.model_validate(
            {
                "event_id": f"e{i}",
                "model_id": f"m{i % 2}",
                "timestamp": 1_700_000_000.0 + i,
                "features": {"x": float(i % 17), "c": "ab"[i % 2]},
                "prediction": {"label": str(i % 2), "score": (i % 10) / 10},
            }
        )
        for i in range(lo, hi)
    ]


def _labels(ids: range) -> list[LabelEvent]:
    return [
        LabelEvent.model_validate(
            {"event_id": f"e{i}", "model_id": f"m{i % 2}", "timestamp": 1_700_000_900.0 + i,
             "label": str(i % 3 == 0)}
        )
        for i in ids
    ]  # fmt: skip


def test_an_aborted_transaction_rewinds_the_state_waiting_predictions_included() -> None:
    """Exactly-once without a changelog: the rewind point leaves the waiting predictions out
    of the snapshot, and the label join goes back by its undo journal; the state after the
    rewind equals the state at the last committed checkpoint."""
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "processing_guarantee": "exactly_once"}
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    app._ckpt = _AbortingCheckpoint()  # type: ignore[assignment]
    state = app.states[0] = PartitionState(0, cfg)
    state.process(_predictions(0, 1500), _labels(range(0, 600, 3)))
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    assert app.assignment.base[0]["join"] is None and app.states[0].join.settled
    committed = app.states[0].snapshot()
    # more predictions, labels for old and new ones, a duplicate: then the commit aborts
    app.states[0].process(_predictions(1400, 2600), _labels(range(1, 2000, 2)))
    app.assignment.dirty.add(0)
    assert app.states[0].snapshot() != committed
    assert not app.checkpoint()
    assert app.states[0].snapshot() == committed
    # and it goes on from there as a state restored from that snapshot would
    twin = PartitionState.from_snapshot(committed, cfg)
    for s in (app.states[0], twin):
        s.process(_predictions(2600, 3000), _labels(range(2, 3000, 5)))
    assert app.states[0].snapshot() == twin.snapshot()


class _StuckConsumer:
    """A consumer whose seek fails (and, with ``pause_fails``, whose pause fails too)."""

    def __init__(self, pause_fails: bool = False) -> None:
        self.pause_fails = pause_fails
        self.paused: list[tuple[str, int]] = []

    def seek(self, tp: Any) -> None:
        raise RuntimeError("Erroneous state")

    def pause(self, tps: list[Any]) -> None:
        if self.pause_fails:
            raise RuntimeError("unknown partition")
        self.paused.extend((tp.topic, tp.partition) for tp in tps)


@pytest.mark.parametrize("pause_fails", [False, True])
def test_a_failed_seek_after_a_rewind_holds_the_partition_instead_of_skipping(
    pause_fails: bool,
) -> None:
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "processing_guarantee": "exactly_once"}
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    app._ckpt = _AbortingCheckpoint()  # type: ignore[assignment]
    consumer = app._consumer = _StuckConsumer(pause_fails)
    app.states[0] = PartitionState(0, cfg)
    app.assignment.start[("predictions", 0)] = 0
    app.states[0].process(_predictions(0, 10), [])
    app.assignment.dirty.add(0)
    assert app.checkpoint()  # the first commit succeeds; the next one aborts
    app.states[0].process(_predictions(10, 20), [])
    app.assignment.dirty.add(0)
    assert not app.checkpoint()
    if pause_fails:
        assert app.stop_event.is_set()  # neither seek nor pause: stop rather than skip
    else:
        assert consumer.paused == [("predictions", 0)] and not app.stop_event.is_set()


@pytest.mark.parametrize(
    "error", [pickle.UnpicklingError("bad pickle"), AttributeError("no attribute"), ImportError()]
)
def test_a_signed_but_unreadable_snapshot_starts_the_partition_fresh(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """After an upgrade, a genuine checkpoint can hold state this release cannot load: the
    assignment must start the partition fresh (counted), not fail in the callback."""
    import stream_monitor.assignment as assignment_module
    from stream_monitor.state import Snapshot

    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "checkpoint": {"hmac_key": "k" * 32}}
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    snap = Snapshot(partition=0, offsets={"predictions": 7}, state={"v": 1}, created_at=0.0)
    monkeypatch.setattr(assignment_module, "read_latest", lambda *a, **k: (b"0", b"{}", []))
    monkeypatch.setattr(assignment_module, "decode_snapshot", lambda *a, **k: snap)

    def unreadable(*a: Any, **k: Any) -> PartitionState:
        raise error

    monkeypatch.setattr(PartitionState, "from_snapshot", unreadable)
    state, offsets = app.assignment.restore(0)
    assert offsets == {} and state.models == {}
    outcome = {"outcome": "incompatible_state"}
    assert app.registry.get_sample_value("stream_monitor_state_restores_total", outcome) == 1.0
