"""The partitions assigned to one member of the consumer group, and what is kept per partition.

State belongs to partitions: each assigned partition number of the predictions topic (and the
same partition of the co-partitioned labels topic) has one
:class:`~stream_monitor.monitor.partition.PartitionState`. :class:`Assignment` is its life
cycle, apart from the loop that feeds it (``app.Application``):

* **assign**: a partition's state is restored from its last snapshot in the changelog topic
  (or starts fresh, with the reason counted and logged), and consumption resumes from exactly
  the offsets that snapshot covers. A snapshot whose offsets lie behind what the group has
  committed since is ``stale`` (an old checkpoint produced again, or one left from before the
  changelog was turned off for a while): using it would re-process committed input and repeat
  its alerts, so the partition starts fresh from the committed offsets instead;
* **advance**: where each input (topic, partition) stands as far as processed, and which
  partitions changed since the last checkpoint;
* **checkpoint**: the snapshots (and changelog records) of the partitions that changed; once
  committed, they are the state to rewind to;
* **rewind**: after an aborted transaction, every state goes back to its last committed
  snapshot and the positions the inputs must be re-read from;
* **drop**: on revocation or loss, the partitions' states and positions are forgotten.

Everything the metrics scrape reads (``states``) is changed under ``lock``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from stream_monitor.checkpoint import OutputRecord
from stream_monitor.config import MonitorConfig
from stream_monitor.kafka import clients
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.monitor.join import LabelJoin, Mark
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.reference import Profile
from stream_monitor.state import (
    CHANGELOG_MAX_MESSAGE_BYTES,
    ENVELOPE_VERSION,
    Refused,
    Snapshot,
    checkpoint_key,
    chunk_digest,
    chunk_key,
    chunk_of,
    decode_chunk,
    decode_snapshot,
    encode_chunk,
    encode_snapshot,
    read_by_key,
)

__all__ = ["SNAPSHOT_LIMIT_BYTES", "Assignment", "PendingCheckpoint"]

log = logging.getLogger(__name__)

#: The largest snapshot record written: the changelog topic's limit less room for the batch.
SNAPSHOT_LIMIT_BYTES = CHANGELOG_MAX_MESSAGE_BYTES - 1024 * 1024

#: An input partition: (topic, partition number).
Key = tuple[str, int]


@dataclass
class PendingCheckpoint:
    """What one checkpoint covers until it is committed (or not)."""

    #: The partitions that changed since the last checkpoint.
    dirty: list[int]
    #: The states to rewind to once committed (exactly-once), without the join's waiting
    #: predictions: the join goes back by its undo journal to ``marks``.
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: The states written to the changelog (with the newest waiting predictions).
    states: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: The label joins' undo-journal marks.
    marks: dict[int, Mark] = field(default_factory=dict)
    #: The contents of label-join chunks sealed since their partition's last checkpoint.
    fresh: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: The label-join chunks each written checkpoint lists, with their digests.
    chunks: dict[int, dict[int, str]] = field(default_factory=dict)
    #: The changelog records: chunks, snapshots (with ``checkpoint.hmac_key``), tombstones.
    records: list[OutputRecord] = field(default_factory=list)


class Assignment:
    """The assigned input partitions: their states, positions and last committed snapshots.

    ``changelog``: write snapshots to and restore them from ``changelog_topic`` (signed when
    ``hmac`` is a key); ``keep_rewind_point`` (exactly-once): keep each committed state to
    rewind to after an aborted transaction even without a changelog.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        profiles: Mapping[tuple[str, str | None], Profile],
        metrics: Instruments,
        *,
        changelog: bool,
        hmac: bytes | None,
        changelog_topic: str,
        keep_rewind_point: bool,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.profiles = profiles
        self.metrics = metrics
        self.changelog = changelog
        self.hmac = hmac
        self.changelog_topic = changelog_topic
        self.group = cfg.group_id
        self.keep_rewind_point = keep_rewind_point
        self.clock = clock
        self.lock = threading.Lock()
        self.states: dict[int, PartitionState] = {}
        #: The assigned input (topic, partition)s.
        self.assigned: list[TopicPartition] = []
        #: Partitions processed since the last checkpoint.
        self.dirty: set[int] = set()
        #: Next offset to read per input (topic, partition), as far as processed.
        self.positions: dict[Key, int] = {}
        #: Where each input (topic, partition) stood at the last checkpoint (or assignment).
        self.start: dict[Key, int] = {}
        #: The last committed snapshot of each partition, to rewind to after an abort.
        self.base: dict[int, dict[str, Any] | None] = {}
        #: The sequence number of each partition's last checkpoint written or restored (kept
        #: across rebalances: a restore never goes back behind it).
        self.sequence: dict[int, int] = {}
        #: The label-join chunks in the changelog that each partition's last committed
        #: checkpoint lists, with their digests (written once, deleted once empty).
        self.chunks: dict[int, dict[int, str]] = {}
        #: Chunk records in the changelog that no checkpoint lists (left by a crash between
        #: a checkpoint and its tombstones): deleted with the partition's next checkpoint.
        self.orphans: dict[int, set[int]] = {}

    # --- assign and drop ------------------------------------------------------------------------
    def assign(
        self,
        partitions: list[TopicPartition],
        committed: Callable[[list[TopicPartition]], list[TopicPartition]] | None = None,
    ) -> None:
        """Restore the state of each newly assigned partition number and set each
        ``TopicPartition``'s offset to where its snapshot left off (if it has one).

        ``committed(tps)``: the group's committed offsets of ``tps`` (the consumer's
        ``committed``), to refuse stale snapshots; None: not checked."""
        numbers = sorted({tp.partition for tp in partitions if tp.partition not in self.states})
        known = self._committed(partitions, numbers, committed)
        restored = {p: self.restore(p, known.get(p)) for p in numbers}
        with self.lock:
            for p, (state, offsets) in restored.items():
                self.states[p] = state
                self.base[p] = state.snapshot() if offsets else None
                for topic, offset in offsets.items():
                    self.start[(topic, p)] = offset
                    self.positions[(topic, p)] = offset
            self.assigned = list(partitions)
        for tp in partitions:
            start = self.start.get((tp.topic, tp.partition))
            if start is not None:
                tp.offset = start

    def drop(self, partitions: list[TopicPartition]) -> tuple[set[Key], set[int]]:
        """Forget revoked or lost inputs; the partition numbers no longer held lose their
        state. Returns the inputs gone and the partition numbers still held."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        with self.lock:
            self.assigned = [tp for tp in self.assigned if (tp.topic, tp.partition) not in gone]
            kept = {tp.partition for tp in self.assigned}
            for p in [p for p in self.states if p not in kept]:
                del self.states[p]
                self.base.pop(p, None)
                self.chunks.pop(p, None)
                self.orphans.pop(p, None)
                self.dirty.discard(p)
            for d in (self.positions, self.start):
                for key in [k for k in d if k in gone]:
                    del d[key]
        return gone, kept

    def _committed(
        self,
        partitions: list[TopicPartition],
        numbers: list[int],
        committed: Callable[[list[TopicPartition]], list[TopicPartition]] | None,
    ) -> dict[int, dict[str, int]]:
        """The group's committed offset per input topic of each partition number (only those
        the group committed); nothing when not known."""
        if committed is None or not self.changelog or not numbers:
            return {}
        want = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        want = [tp for tp in want if tp.partition in numbers]
        try:
            found = committed(want)
        except Exception as exc:  # staleness cannot be checked: restore as before
            log.warning(
                "could not read the committed offsets (%s): stale checkpoints are "
                "not detected in this assignment",
                exc,
            )
            return {}
        out: dict[int, dict[str, int]] = {}
        for tp in found:
            if tp.offset >= 0 and tp.error is None:
                out.setdefault(tp.partition, {})[tp.topic] = tp.offset
        return out

    def restore(
        self, p: int, committed: Mapping[str, int] | None = None
    ) -> tuple[PartitionState, dict[str, int]]:
        """The partition's state from its last snapshot, or a fresh one (and why, logged).

        ``committed``: the group's committed offset per input topic of the partition; a
        snapshot behind any of them is stale."""
        fresh: tuple[PartitionState, dict[str, int]] = (
            PartitionState(p, self.cfg, self.profiles),
            {},
        )
        if not self.changelog:
            return fresh
        restores = self.metrics.restores
        try:
            records = read_by_key(
                clients.client_config(self.cfg),
                self.changelog_topic,
                p,
                self.cfg.checkpoint.restore_timeout_seconds,
            )
        except Exception as exc:
            restores.labels(outcome="read_error").inc()
            log.error("could not read the changelog partition=%d error=%s; fresh state", p, exc)
            return fresh
        stored = {k: rec[1] for key, rec in records.items() if (k := chunk_of(key, p)) is not None}
        self.orphans[p] = set(stored)  # until the checkpoint lists them
        rec = records.get(checkpoint_key(p))
        if rec is None or rec[1] is None:
            restores.labels(outcome="empty").inc()
            return fresh
        key, value, headers = rec
        try:
            snap = decode_snapshot(
                key, value, headers, self.hmac, expected_partition=p, expected_group=self.group
            )
        except Exception as exc:  # decode_snapshot refuses by value; anything else is a bug
            snap = Refused("malformed", f"{type(exc).__name__}: {exc}")
        if not isinstance(snap, Refused):
            snap = self._stale(snap, committed) or snap
        if isinstance(snap, Refused):
            restores.labels(outcome=snap.reason).inc()
            log.error(
                "refusing the checkpoint of partition=%d reason=%s detail=%s; rebuilding state "
                "from the committed offsets",
                p,
                snap.reason,
                snap.detail,
            )
            return fresh
        try:
            join, digests = self._restore_join(p, snap, stored)
            state = PartitionState.from_snapshot(
                {**snap.state, "join": None}, self.cfg, self.profiles, join=join
            )
        except Exception as exc:  # e.g. a state this release cannot read after an upgrade
            restores.labels(outcome="incompatible_state").inc()
            log.error(
                "refusing the checkpoint of partition=%d: this release cannot read its state "
                "(%s: %s); rebuilding state from the committed offsets",
                p,
                type(exc).__name__,
                exc,
            )
            return fresh
        restores.labels(outcome="restored").inc()
        self.sequence[p] = snap.sequence
        self.chunks[p] = digests
        self.orphans[p].difference_update(digests)
        log.info(
            "restored partition=%d models=%d offsets=%s sequence=%d",
            p,
            len(state.models),
            snap.offsets,
            snap.sequence,
        )
        return state, dict(snap.offsets)

    def _restore_join(
        self, p: int, snap: Snapshot, stored: Mapping[int, bytes | None]
    ) -> tuple[LabelJoin, dict[int, str]]:
        """The label join of a checkpoint, with the chunks it lists that verify against their
        digests; the predictions of any other listed chunk are counted as evicted (logged)."""
        listed = {int(k): str(v) for k, v in snap.state.get("chunk_digests", {}).items()}
        contents: dict[int, dict[str, Any]] = {}
        for k, digest in listed.items():
            found = decode_chunk(stored.get(k), digest, group=self.group, partition=p, chunk=k)
            if isinstance(found, Refused):
                log.warning(
                    "label-join chunk %d of partition=%d refused (%s: %s): its predictions "
                    "awaiting labels are lost",
                    k,
                    p,
                    found.reason,
                    found.detail,
                )
            else:
                contents[k] = found
        join = LabelJoin.from_snapshot(snap.state["join"], chunks=contents)
        if join.lost_on_restore:
            log.warning(
                "partition=%d restored without %d predictions awaiting labels (counted evicted)",
                p,
                join.lost_on_restore,
            )
        return join, {k: listed[k] for k in contents}

    def _stale(self, snap: Snapshot, committed: Mapping[str, int] | None) -> Refused | None:
        """Why ``snap`` is older than what the group committed since, or None."""
        behind = {
            topic: (snap.offsets.get(topic, 0), offset)
            for topic, offset in (committed or {}).items()
            if snap.offsets.get(topic, 0) < offset
        }
        if behind:
            return Refused(
                "stale",
                "the group committed further since this checkpoint (checkpoint, committed): "
                + ", ".join(f"{t} {a} < {b}" for t, (a, b) in sorted(behind.items())),
            )
        last = self.sequence.get(snap.partition)
        if last is not None and snap.sequence < last:
            return Refused(
                "stale", f"checkpoint sequence {snap.sequence} is behind {last}, seen before"
            )
        return None

    # --- processing -------------------------------------------------------------------------------
    def advance(self, key: Key, first: int, last: int) -> None:
        """Offsets ``first`` to ``last`` of input ``key`` were processed (or dead-lettered)."""
        self.start.setdefault(key, first)
        self.positions[key] = last + 1
        self.dirty.add(key[1])

    # --- checkpoints ------------------------------------------------------------------------------
    def prepare(self) -> PendingCheckpoint:
        """The snapshots (and changelog records) of the partitions changed since the last
        checkpoint; nothing is changed until :meth:`committed`."""
        changelog, rewind = self.changelog, self.keep_rewind_point
        with self.lock:
            pending = PendingCheckpoint(sorted(p for p in self.dirty if p in self.states))
            for p in pending.dirty:
                state = self.states[p]
                if not (changelog or rewind):
                    break  # nothing would use a snapshot
                # Without the waiting predictions: the join goes back by its undo journal,
                # so the state to rewind to costs what changed, not what is held.
                base = state.snapshot(join=False)
                if rewind:
                    pending.snapshots[p] = base
                    pending.marks[p] = state.join.mark()
                if changelog:
                    # The join's older waiting predictions go in chunks, each written once:
                    # what a checkpoint writes does not grow with what the join holds.
                    self._split(p, state, base, pending)
        for p in list(pending.states):
            pending.records.extend(self._fitting_records(p, pending))
        return pending

    def _split(
        self, p: int, state: PartitionState, base: dict[str, Any], pending: PendingCheckpoint
    ) -> None:
        join, fresh = state.join.split_snapshot(self.chunks.get(p, {}))
        pending.states[p] = {**base, "join": join}
        pending.fresh[p] = fresh

    def _fitting_records(self, p: int, pending: PendingCheckpoint) -> list[OutputRecord]:
        """The changelog records of ``p``'s checkpoint, in the order they must be written:
        the chunks sealed since the last one, the checkpoint (listing every live chunk with
        its digest), then tombstones of the chunks no longer listed (a crash in between leaves
        orphans, which the next checkpoint after a restore deletes)."""
        found = self._fitting_record(p, pending)
        if found is None:
            return []
        chunks, rec = found
        return [*chunks, rec, *self._tombstones(p, pending)]

    def _chunk_records(self, p: int, pending: PendingCheckpoint) -> list[OutputRecord]:
        """Encode ``p``'s fresh chunks and name every live chunk's digest in its state; return
        the chunks' records."""
        digests = dict(self.chunks.get(p, {}))
        out = []
        for k, contents in pending.fresh.get(p, {}).items():
            value = encode_chunk(self.group, p, k, contents)
            digests[k] = chunk_digest(value)
            out.append(OutputRecord(self.changelog_topic, chunk_key(p, k), value, partition=p))
        live = {int(k): digests[int(k)] for k in pending.states[p]["join"]["chunks"]}
        pending.states[p]["chunk_digests"] = {str(k): d for k, d in live.items()}
        pending.chunks[p] = live
        return out

    def _tombstones(self, p: int, pending: PendingCheckpoint) -> list[OutputRecord]:
        live = pending.chunks.get(p, {})
        gone = (set(self.chunks.get(p, {})) | self.orphans.get(p, set())) - set(live)
        return [
            OutputRecord(self.changelog_topic, chunk_key(p, k), None, partition=p)
            for k in sorted(gone)
        ]

    def _fitting_record(
        self, p: int, pending: PendingCheckpoint
    ) -> tuple[list[OutputRecord], OutputRecord] | None:
        """The records of ``p``'s fresh chunks and of its state, shedding the oldest
        predictions awaiting labels (counted as evicted) while it is too large for one record,
        rather than fail every checkpoint; None when even without them it does not fit (the
        partition is then not written to the changelog: its offsets still commit, so a restore
        finds the last snapshot stale and starts fresh instead of re-processing)."""
        chunks = self._chunk_records(p, pending)
        rec = self._record(p, pending.states[p])
        while len(rec.value or b"") > SNAPSHOT_LIMIT_BYTES:
            with self.lock:
                state = self.states[p]
                shed = state.join.shed(max(1, len(state.join) // 4))
                self._split(p, state, state.snapshot(join=False), pending)
            chunks = self._chunk_records(p, pending)
            self.metrics.checkpoint_failures.labels(reason="snapshot_too_large").inc()
            log.error(
                "snapshot of partition=%d is %d bytes, over %d: evicted %d predictions "
                "awaiting labels (shorten event ids, or fewer models per partition)",
                p,
                len(rec.value or b""),
                SNAPSHOT_LIMIT_BYTES,
                shed,
            )
            if shed == 0:
                log.error(
                    "the state of partition=%d is %d bytes with no prediction awaiting a label, "
                    "over the changelog record limit: not checkpointed (a restart starts it "
                    "fresh); lower limits.max_features_per_model, segments.max_values or the "
                    "number of segment keys",
                    p,
                    len(rec.value or b""),
                )
                return None
            rec = self._record(p, pending.states[p])
        return chunks, rec

    def _record(self, p: int, state: dict[str, Any]) -> OutputRecord:
        offsets = {
            topic: self.positions[(topic, p)]
            for topic in (self.cfg.topics.predictions, self.cfg.topics.labels)
            if (topic, p) in self.positions
        }
        snap = Snapshot(
            partition=p,
            offsets=offsets,
            state=state,
            created_at=self.clock(),
            version=ENVELOPE_VERSION,
            group=self.group,
            sequence=self.sequence.get(p, -1) + 1,
        )
        key, value, headers = encode_snapshot(snap, self.hmac)
        return OutputRecord(self.changelog_topic, key, value, headers, partition=p)

    def committed(self, pending: PendingCheckpoint) -> None:
        """``pending`` is committed: its snapshots become the states to rewind to, and the
        inputs' positions the places to re-read from."""
        written = {
            r.partition
            for r in pending.records
            if r.partition is not None and r.key == checkpoint_key(r.partition)
        }
        for p in written:
            if p in pending.chunks:
                self.chunks[p] = pending.chunks[p]
                self.orphans.pop(p, None)
        for p, snap in pending.snapshots.items():
            if p in written:
                self.sequence[p] = self.sequence.get(p, -1) + 1
            self.base[p] = snap
            if p in pending.marks and p in self.states:
                self.states[p].join.settle(pending.marks[p])
        for key, offset in self.positions.items():
            self.start[key] = offset
        self.dirty.difference_update(pending.dirty)

    def rewind(self) -> list[TopicPartition]:
        """After an aborted transaction: every state back to its last committed snapshot (a
        fresh state where there is none); returns where each input must be re-read from."""
        with self.lock:
            for p in list(self.states):
                base = self.base.get(p)
                join = None
                if base is not None and base["join"] is None:
                    join = self.states[p].join
                    join.rewind()
                self.states[p] = (
                    PartitionState(p, self.cfg, self.profiles)
                    if base is None
                    else PartitionState.from_snapshot(base, self.cfg, self.profiles, join=join)
                )
            self.dirty.clear()
            seeks = []
            for key, offset in self.start.items():
                self.positions[key] = offset
                seeks.append(TopicPartition(key[0], key[1], offset))
            for key in [k for k in self.positions if k not in self.start]:
                del self.positions[key]
        return seeks
