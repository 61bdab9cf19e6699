"""What the multivariate drift test costs: ``MMDDrift.close_window()`` and ``update()``.

    .venv/bin/python load_tests/bench_multivariate.py [--dims 5 20 50] [--sizes 128 256 512]
        [--permutations 200] [--repeat 7] [--no-results]

For each number of columns ``d`` in ``--dims`` and each sample size in ``--sizes`` (used as both
``max_reference`` and ``window_sample``, so the pooled sample has twice that many rows), it
builds an ``MMDDrift`` on uniform rows of ``[0, 1]^d`` (PIT space under no drift) and times:

* ``close_window()``: ``--repeat`` calls after one warm-up call, each on a freshly filled window
  sample (filling is not timed); median and range;
* ``update()`` with a batch of ``--update-rows`` rows into a full reservoir (the steady state
  of a long window): median of ``--update-calls`` calls;
* the snapshot with a full window: its size as compact JSON (orjson) and the time of
  ``snapshot()``.

The flops column is :func:`stream_monitor.stats.multivariate.mmd_cost`. numpy's BLAS uses
one thread per core for the ``K @ S`` product unless told otherwise; on a shared machine
``OPENBLAS_NUM_THREADS=1`` gives steadier figures (a BLAS thread waiting for a busy core
costs more than it gains), and the monitor runs one Python thread anyway. The command line
in the section shows such variables when set. No broker, no network. Rewrites the
``multivariate`` section of load_tests/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import (  # noqa: E402
    add_results_args,
    machine_busy_cores_s,
    machine_info,
    write_section,
)

from stream_monitor.stats.multivariate import MMDDrift, mmd_cost  # noqa: E402


def bench_one(
    d: int,
    size: int,
    permutations: int,
    repeat: int,
    update_rows: int,
    update_calls: int,
    seed: int,
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    mon = MMDDrift(
        rng.random((size, d)),
        window_sample=size,
        max_reference=size,
        permutations=permutations,
        seed=seed,
    )
    close_ms: list[float] = []
    for i in range(repeat + 1):
        mon.update(rng.random((size, d)))
        t0 = time.perf_counter()
        r = mon.close_window()
        dt = (time.perf_counter() - t0) * 1000
        assert r is not None and r.n_window == size and r.n_reference == size
        if i:  # the first call is a warm-up
            close_ms.append(dt)

    # update() into a full reservoir, well into a long window
    mon.update(rng.random((size, d)))
    batches = [rng.random((update_rows, d)) for _ in range(update_calls)]
    upd_ms: list[float] = []
    for x in batches:
        t0 = time.perf_counter()
        mon.update(x)
        upd_ms.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    snap = mon.snapshot()
    snap_ms = (time.perf_counter() - t0) * 1000
    snap_bytes = len(orjson.dumps(snap))
    med = statistics.median(close_ms)
    flops = mmd_cost(size, size, d, permutations)
    return {
        "close_ms": med,
        "close_min": min(close_ms),
        "close_max": max(close_ms),
        "gflop": flops / 1e9,
        "gflops": flops / 1e9 / (med / 1000),
        "update_ms": statistics.median(upd_ms) * 1000 / update_rows,
        "snap_ms": snap_ms,
        "snap_kb": snap_bytes / 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dims", type=int, nargs="+", default=[5, 20, 50], help="columns d")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[128, 256, 512],
        help="window_sample = max_reference",
    )
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7, help="timed close_window() calls per case")
    ap.add_argument("--update-rows", type=int, default=1000, help="rows per update() call")
    ap.add_argument("--update-calls", type=int, default=21, help="timed update() calls per case")
    ap.add_argument("--seed", type=int, default=0)
    add_results_args(ap)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    machine = machine_info(kafka=None)
    env = [
        f"{k}={os.environ[k]} "
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        if k in os.environ
    ]
    cmd = " ".join(
        [
            "".join(env) + ".venv/bin/python load_tests/bench_multivariate.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    busy0, own0 = machine_busy_cores_s(), time.process_time()

    rows = []
    for d in args.dims:
        for size in args.sizes:
            res = bench_one(
                d,
                size,
                args.permutations,
                args.repeat,
                args.update_rows,
                args.update_calls,
                args.seed,
            )
            rows.append((d, size, res))
            print(
                f"d={d} size={size}: close_window {res['close_ms']:.1f} ms, "
                f"update {res['update_ms']:.3f} ms per {args.update_rows:,} rows",
                flush=True,
            )
    wall = time.monotonic() - t0
    busy1, own1 = machine_busy_cores_s(), time.process_time()
    own = (own1 - own0) / wall
    others = (
        "n/a" if busy0 is None or busy1 is None else f"{max(0.0, (busy1 - busy0) / wall - own):.2f}"
    )

    md = [
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} — {machine}",
        "",
        f"Command: `{cmd.strip()}` (total {wall:.0f} s)",
        "",
        "`MMDDrift` (stream_monitor/stats/multivariate.py) on uniform rows of [0, 1]^d; "
        "reference and window sample of the same size (pooled N = 2 x size); "
        f"{args.permutations} permutations. `close_window()`: median (range) of "
        f"{args.repeat} calls after a warm-up, each on a freshly filled window sample. "
        f"`update()`: median of {args.update_calls} calls of {args.update_rows:,} rows into a "
        "full reservoir. GFLOP: `mmd_cost` (dominated by the N x N by N x (permutations + 1) "
        "product). Snapshot: compact JSON (orjson) with a full window. "
        f"Machine contention: {others} cores used by other processes on average; this script "
        f"{own:.2f}.",
        "",
        "| d | max_reference = window_sample | close_window() ms | GFLOP | GFLOP/s "
        f"| update() ms per {args.update_rows:,} rows | snapshot KB | snapshot() ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d, size, r in rows:
        md.append(
            f"| {d} | {size} | **{r['close_ms']:.1f}** ({r['close_min']:.1f}-{r['close_max']:.1f}) "
            f"| {r['gflop']:.3f} | {r['gflops']:.1f} | {r['update_ms']:.3f} | {r['snap_kb']:,.0f} "
            f"| {r['snap_ms']:.1f} |"
        )
    print("\n".join(md[4:]))
    write_section(
        args, "multivariate", "Multivariate drift test cost (load_tests/bench_multivariate.py)", md
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
