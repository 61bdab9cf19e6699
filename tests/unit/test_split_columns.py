"""``LabelJoin.split_snapshot``'s columns (the open chunk's, and the contents of the chunks
sealed since the last split) against the queues read row by row: from scratch and when only
what arrived since the last split is read."""

from __future__ import annotations

import random

import msgspec
import pytest

from stream_monitor.monitor.join import CHUNK_SIZE, LabelJoin, PendingPrediction


def _expected_split(
    j: LabelJoin, below: int
) -> tuple[dict[str, dict[str, list[object]]], dict[int, dict[str, dict[str, list[object]]]]]:
    """What the open chunk's columns (per model) and the sealed chunks' contents (those with
    a sequence number from ``below`` on) must hold, read row by row from the queues."""
    sealed = j._seq - j._seq % CHUNK_SIZE
    names = ["event_id", "seq", *PendingPrediction.__struct_fields__]
    pending: dict[str, dict[str, list[object]]] = {}
    chunks: dict[int, dict[str, dict[str, list[object]]]] = {}
    for m, q in j._queues.items():
        pending[m] = {name: [] for name in names}
        for event_id, (seq, p) in q.items():
            if seq >= sealed:
                cols = pending[m]
            elif seq >= below:
                models = chunks.setdefault(seq // CHUNK_SIZE, {})
                cols = models.setdefault(m, {name: [] for name in names})
            else:
                continue
            row = (event_id, seq, *msgspec.structs.astuple(p))
            for name, value in zip(names, row, strict=True):
                cols[name].append(value)
    return pending, chunks


@pytest.mark.parametrize("seed", range(3))
def test_split_snapshot_columns_are_the_queues_rows(seed: int) -> None:
    """From scratch and then incrementally (only what arrived since is read from the queues),
    the open chunk's columns and every fresh chunk's hold the waiting rows in arrival order."""
    rng = random.Random(seed)
    j = LabelJoin(capacity=50_000, ttl_seconds=1e9)
    written: set[int] = set()
    n = 0
    for step in range(6):
        below = j._live_below if j._gone is not None else 0
        for _ in range(rng.randrange(500, 3 * CHUNK_SIZE)):
            m = rng.choice(["a", "b", "c"])
            seg = None if rng.random() < 0.5 else ("k=v",)
            label = rng.choice(["1", "0", None])
            j.add_prediction(m, f"e{n}", float(n), label=label, score=0.5, segments=seg)
            n += 1
        for _ in range(rng.randrange(0, 400)):
            j.match(rng.choice("abc"), f"e{rng.randrange(n)}")
        if step == 0:
            below = 0  # the first split reads every queue
        pending, chunks = _expected_split(j, below)
        snap, fresh = j.split_snapshot(written)
        assert {m: s["pending"] for m, s in snap["models"].items()} == pending
        want = {k: {"models": v} for k, v in chunks.items() if k not in written}
        assert fresh == want
        written |= set(fresh)
    assert j._gone is not None and len(written) >= 5
