"""What a full label join costs each checkpoint: the whole join written every time (the
changelog record before label-join chunks, ``LabelJoin.snapshot``) against the chunked form
(``LabelJoin.split_snapshot``: sealed chunks written once, a bitmap per live chunk).

In process, no broker: one partition's join is filled to ``--capacity`` with a steady stream
(``--labelled`` of the predictions get their label ``--label-lag`` arrivals later, the rest
never do), then ``--checkpoints`` checkpoints are taken every ``--interval`` predictions, each
encoded as the changelog records would be (orjson; chunks through ``encode_chunk``). Both
forms run on the same join at the same points, alternating, so the ratio comes from one run.

    .venv/bin/python load_tests/bench_join_checkpoint.py [--write-results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import machine_info, update_section  # noqa: E402

from stream_monitor.monitor.join import LabelJoin, PendingPrediction  # noqa: E402
from stream_monitor.state import chunk_digest, encode_chunk  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=int, default=200_000)
    ap.add_argument("--labelled", type=float, default=0.8)
    ap.add_argument("--label-lag", type=int, default=20_000)
    ap.add_argument("--interval", type=int, default=17_000, help="predictions per checkpoint")
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(7)
    join = LabelJoin(capacity=args.capacity, ttl_seconds=7 * 86400.0)
    labelled = rng.random(10_000_000) < args.labelled
    n = 0
    pending_labels: deque[tuple[str, str]] = deque()

    def feed(count: int) -> None:
        nonlocal n
        rows: dict[str, list[tuple[str, PendingPrediction]]] = {}
        for _ in range(count):
            m = f"model-{n % args.models}"
            e = f"{n:016x}-{n * 2654435761 % 2**32:08x}"  # uuid-like length
            rows.setdefault(m, []).append((e, PendingPrediction(1.7e9 + n / 1e3, "1", 0.8)))
            if labelled[n % len(labelled)]:
                pending_labels.append((m, e))
            n += 1
        for m, r in rows.items():
            join.add_predictions(m, r)
        while len(pending_labels) > args.label_lag:
            join.match(*pending_labels.popleft())

    t0 = time.perf_counter()
    while join.evicted == 0:  # full: from now on it sheds its oldest to take the newest
        feed(args.interval)
    fill_s = time.perf_counter() - t0
    print(f"filled: {len(join):,} waiting after {n:,} predictions ({fill_s:.1f} s)")

    full_s: list[float] = []
    full_b: list[int] = []
    split_s: list[float] = []
    split_b: list[int] = []
    written: dict[int, str] = {}
    first_split_b = 0
    for i in range(args.checkpoints):
        feed(args.interval)
        t = time.perf_counter()
        full = orjson.dumps(join.snapshot())
        full_s.append(time.perf_counter() - t)
        full_b.append(len(full))
        t = time.perf_counter()
        snap, fresh = join.split_snapshot(written)
        size = 0
        for k, contents in fresh.items():
            value = encode_chunk("g", 0, k, contents)
            written[k] = chunk_digest(value)
            size += len(value)
        live = {int(k) for k in snap["chunks"]}
        for k in [k for k in written if k not in live]:
            del written[k]
        size += len(orjson.dumps({**snap, "digests": {str(k): written[k] for k in live}}))
        split_s.append(time.perf_counter() - t)
        if i == 0:
            first_split_b = size  # every live chunk is new at the first one
        else:
            split_b.append(size)
    fm, sm = float(np.median(full_s)), float(np.median(split_s))
    fb, sb = float(np.median(full_b)), float(np.median(split_b))
    lines = [
        "## Label-join checkpoint cost, whole vs chunked (load_tests/bench_join_checkpoint.py)",
        "",
        f"Run {machine_info(kafka=None)}",
        "",
        f"Command: `.venv/bin/python load_tests/bench_join_checkpoint.py {' '.join(sys.argv[1:])}`",
        "",
        f"One partition's join at its capacity ({args.capacity:,} waiting, {args.models} models, "
        f"{args.labelled:.0%} of predictions labelled {args.label_lag:,} arrivals later), "
        f"a checkpoint every {args.interval:,} predictions, {args.checkpoints} checkpoints, "
        "both forms at the same points of the same join (median per checkpoint; encoding "
        "only, no broker):",
        "",
        "| form | seconds | bytes written |",
        "|---|---:|---:|",
        f"| whole join (`snapshot`) | {fm:.3f} | {fb:,.0f} |",
        f"| chunked (`split_snapshot` + new chunks) | {sm:.3f} | {sb:,.0f} |",
        "",
        f"Ratio chunked / whole: **time {sm / fm:.3f}, bytes {sb / fb:.3f}**. The first "
        f"chunked checkpoint (every live chunk new, as after a restart without chunks) wrote "
        f"{first_split_b:,} bytes.",
    ]
    title = lines[0].removeprefix("## ")
    body = "\n".join(lines[2:])
    print(body)
    if args.write_results:
        update_section(HERE / "RESULTS.md", "join-checkpoint", title, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
