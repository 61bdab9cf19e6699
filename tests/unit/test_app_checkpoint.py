"""Application.checkpoint without Kafka: which snapshots it takes (a fake Checkpoint)."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import orjson
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
    ("guarantee", "checkpoint", "snapshots", "records", "rewind_point"),
    [
        ("at_least_once", {"enabled": False}, 0, 0, False),  # nothing would use it: not taken
        ("exactly_once", {"enabled": False}, 1, 0, True),  # the state to rewind to
        ("at_least_once", {}, 1, 1, False),  # the default: an unsigned changelog record
        ("exactly_once", {}, 1, 1, True),  # one snapshot serves both
        ("at_least_once", {"hmac_key": "k" * 32}, 1, 1, False),  # a signed changelog record
    ],
)
def test_checkpoint_takes_a_snapshot_only_when_something_uses_it(
    guarantee: str,
    checkpoint: dict[str, Any],
    snapshots: int,
    records: int,
    rewind_point: bool,
) -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "processing_guarantee": guarantee,
            "checkpoint": checkpoint,
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
    assert len(fake.committed) == 1 and len(fake.committed[0]) == records
    signed = [h for r in fake.committed[0] for h, _ in r.headers if h == "x-hmac-sha256"]
    assert len(signed) == (records if "hmac_key" in checkpoint else 0)
    assert not app.assignment.dirty and (0 in app.assignment.base) == rewind_point
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


def _labels(ids: Iterable[int]) -> list[LabelEvent]:
    return [
        LabelEvent.model_validate(
            {"event_id": f"e{i}", "model_id": f"m{i % 2}", "timestamp": 1_700_000_900.0 + i,
             "label": str(i % 3 == 0)}
        )
        for i in ids
    ]  # fmt: skip


@pytest.mark.parametrize("changelog", [False, True])
def test_an_aborted_transaction_rewinds_the_state_waiting_predictions_included(
    changelog: bool,
) -> None:
    """Exactly-once: the state after the rewind equals the state at the last committed
    checkpoint, with or without a changelog: the rewind point leaves the waiting predictions
    out of the snapshot, and the label join goes back by its undo journal."""
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "processing_guarantee": "exactly_once",
            "checkpoint": {"enabled": changelog},
        }
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    app._ckpt = _AbortingCheckpoint()  # type: ignore[assignment]
    state = app.states[0] = PartitionState(0, cfg)
    state.process(_predictions(0, 1500), _labels(range(0, 600, 3)))
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    base = app.assignment.base[0]
    assert base is not None and base["join"] is None  # the join goes back by its journal
    assert app.states[0].join.settled  # the journal is settled at the mark
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
    monkeypatch.setattr(assignment_module, "read_by_key", lambda *a, **k: {b"0": (b"0", b"{}", [])})
    monkeypatch.setattr(assignment_module, "decode_snapshot", lambda *a, **k: snap)

    def unreadable(*a: Any, **k: Any) -> PartitionState:
        raise error

    monkeypatch.setattr(PartitionState, "from_snapshot", unreadable)
    state, offsets = app.assignment.restore(0)
    assert offsets == {} and state.models == {}
    outcome = {"outcome": "incompatible_state"}
    assert app.registry.get_sample_value("stream_monitor_state_restores_total", outcome) == 1.0


def _restore_with(
    monkeypatch: pytest.MonkeyPatch,
    app: Application,
    snap: Any,
    committed: dict[str, int] | None,
    key: bytes | None = None,
) -> tuple[PartitionState, dict[str, int]]:
    import stream_monitor.assignment as assignment_module
    from stream_monitor.state import encode_snapshot

    record = encode_snapshot(snap, key)
    monkeypatch.setattr(assignment_module, "read_by_key", lambda *a, **k: {record[0]: record})
    return app.assignment.restore(snap.partition, committed)


@pytest.mark.parametrize(
    ("committed", "outcome"),
    [
        (None, "restored"),  # not known: restored as before
        ({"predictions": 10}, "restored"),  # the group committed exactly this checkpoint
        ({"predictions": 7}, "restored"),  # at-least-once: the offsets commit came later
        ({"predictions": 11}, "stale"),  # committed further since: an old checkpoint
        ({"predictions": 10, "labels": 3}, "stale"),  # labels committed, none in it
    ],
)
def test_a_checkpoint_behind_the_committed_offsets_is_stale(
    monkeypatch: pytest.MonkeyPatch, committed: dict[str, int] | None, outcome: str
) -> None:
    """An old genuine checkpoint produced again (or one left from before the changelog was
    off for a while) would re-process committed input and repeat its alerts: fresh instead."""
    from stream_monitor.state import Snapshot

    cfg = MonitorConfig.model_validate({"bootstrap_servers": "unused:9092"})
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    state = PartitionState(0, cfg)
    state.process(_predictions(0, 10), [])
    snap = Snapshot(0, {"predictions": 10}, state.snapshot(), 0.0, group=cfg.group_id)
    restored, offsets = _restore_with(monkeypatch, app, snap, committed)
    got = app.registry.get_sample_value("stream_monitor_state_restores_total", {"outcome": outcome})
    assert got == 1.0
    assert (offsets, bool(restored.models)) == (
        ({"predictions": 10}, True) if outcome == "restored" else ({}, False)
    )


def test_a_checkpoint_of_another_group_or_an_older_sequence_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_monitor.state import Snapshot

    key = b"k" * 32
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "checkpoint": {"hmac_key": (key).decode()}}
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)

    def outcome(snap: Snapshot) -> tuple[str, ...]:
        _restore_with(monkeypatch, app, snap, None, key)
        return tuple(
            o
            for o in ("restored", "wrong_group", "stale")
            if app.registry.get_sample_value("stream_monitor_state_restores_total", {"outcome": o})
        )

    theirs = Snapshot(0, {"predictions": 3}, PartitionState(0, cfg).snapshot(), 0.0, group="g2")
    assert outcome(theirs) == ("wrong_group",)
    ours = Snapshot(0, {"predictions": 3}, PartitionState(0, cfg).snapshot(), 0.0,
                    group=cfg.group_id, sequence=5)  # fmt: skip
    assert outcome(ours) == ("restored", "wrong_group")
    assert app.assignment.sequence[0] == 5
    older = Snapshot(0, {"predictions": 3}, PartitionState(0, cfg).snapshot(), 0.0,
                     group=cfg.group_id, sequence=4)  # fmt: skip
    assert outcome(older) == ("restored", "wrong_group", "stale")


def test_a_state_too_large_for_the_changelog_is_skipped_not_retried_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shedding waiting predictions makes a large snapshot fit; a state too large without any
    (many segments times many features) is left out of the changelog, counted and logged,
    and the checkpoint still commits (a restore then finds it stale and starts fresh)."""
    import stream_monitor.assignment as assignment_module

    cfg = MonitorConfig.model_validate({"bootstrap_servers": "unused:9092"})
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    fake = _FakeCheckpoint()
    app._ckpt = fake  # type: ignore[assignment]
    app.states[0] = PartitionState(0, cfg)
    app.states[1] = PartitionState(1, cfg)
    app.states[0].process(_predictions(0, 2000), [])  # m0 and m1: a large state
    app.states[1].process(_predictions(0, 3), [])  # a small one
    app.assignment.dirty.update({0, 1})
    small = len(app.assignment._record(1, app.states[1].snapshot()).value or b"")
    twin = PartitionState.from_snapshot(app.states[0].snapshot(), cfg)
    twin.join.shed(len(twin.join))
    empty = len(app.assignment._record(0, twin.snapshot()).value or b"")
    assert small < empty  # a limit between the two: partition 0 cannot fit
    monkeypatch.setattr(assignment_module, "SNAPSHOT_LIMIT_BYTES", (small + empty) // 2)
    assert app.checkpoint()
    [rec] = fake.committed[0]
    assert rec.partition == 1  # partition 0 did not fit, even without waiting predictions
    assert len(app.states[0].join) == 0 and app.states[0].join.evicted > 0  # shed first
    failures = app.registry.get_sample_value(
        "stream_monitor_checkpoint_failures_total", {"reason": "snapshot_too_large"}
    )
    assert failures is not None and failures >= 1
    assert app.assignment.sequence == {1: 0}


def test_checkpoints_write_each_chunk_of_waiting_predictions_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full label join costs a checkpoint what changed, not what it holds: sealed chunks
    of waiting predictions are written once, deleted (tombstone) once empty, and a restore
    from the compacted changelog (the latest record per key) gives back the whole join."""
    import stream_monitor.assignment as assignment_module
    from stream_monitor.monitor.join import CHUNK_SIZE

    cfg = MonitorConfig.model_validate({"bootstrap_servers": "unused:9092"})
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    fake = _FakeCheckpoint()
    app._ckpt = fake  # type: ignore[assignment]
    app.states[0] = PartitionState(0, cfg)
    n = 4 * CHUNK_SIZE + 100
    app.states[0].process(_predictions(0, n), [])
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    first = fake.committed[-1]
    assert [r.key for r in first] == [b"0/join/0", b"0/join/1", b"0/join/2", b"0/join/3", b"0"]

    # labels for the first two chunks' predictions (arrival order): those chunks empty out
    def arrived(lo: int, hi: int) -> list[int]:
        return [int(e[1:]) for _, e, _ in app.states[0].join.waiting()[lo:hi]]

    app.states[0].process(_predictions(n, n + 50), _labels(arrived(0, 2 * CHUNK_SIZE)))
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    second = fake.committed[-1]
    assert [(r.key, r.value is None) for r in second] == [
        (b"0", False), (b"0/join/0", True), (b"0/join/1", True)
    ]  # fmt: skip
    full = len(orjson.dumps(app.states[0].join.snapshot()))
    written = orjson.loads(second[0].value or b"")["state"]["join"]
    assert len(orjson.dumps(written)) < full / 10
    # a third, with a label of a chunk still listed: nothing but the checkpoint is written
    app.states[0].process([], _labels(arrived(CHUNK_SIZE, CHUNK_SIZE + 1)))
    app.assignment.dirty.add(0)
    assert app.checkpoint()
    assert [r.key for r in fake.committed[-1]] == [b"0"]

    compacted: dict[bytes | None, Any] = {}
    for rec in [r for batch in fake.committed for r in batch]:
        if rec.value is None:
            compacted.pop(rec.key, None)
        else:
            compacted[rec.key] = (rec.key, rec.value, rec.headers or [])
    assert sorted(k for k in compacted if k) == [b"0", b"0/join/2", b"0/join/3"]
    monkeypatch.setattr(assignment_module, "read_by_key", lambda *a, **k: compacted)
    restored, _ = app.assignment.restore(0)
    assert restored.join.snapshot() == app.states[0].join.snapshot()
    assert restored.join.lost_on_restore == 0 and len(restored.join) == len(app.states[0].join)
    assert app.assignment.chunks[0].keys() == {2, 3} and app.assignment.orphans[0] == set()

    # a chunk lost (or replaced by another record) costs its predictions only, counted
    compacted[b"0/join/2"] = (b"0/join/2", b"{}", [])
    compacted[b"0/join/9"] = (b"0/join/9", b"{}", [])  # listed by no checkpoint
    restored, _ = app.assignment.restore(0)
    assert restored.join.lost_on_restore == CHUNK_SIZE
    assert len(restored.join) == len(app.states[0].join) - CHUNK_SIZE
    assert app.assignment.orphans[0] == {2, 9}  # deleted with the next checkpoint
