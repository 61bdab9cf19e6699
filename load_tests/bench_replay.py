"""Speed of ``stream-monitor replay`` (the backtest) on generated JSON Lines files.

    .venv/bin/python load_tests/bench_replay.py [--predictions 200000] [--models 20]
        [--batch-size 10000] [--partitions N] [--workdir DIR] [--keep] [--no-results]

Phases (each bounded by a count and a time limit):

1. generate: TrafficGenerator writes ``--predictions`` predictions (plus the ~80 % labels it
   emits) of ``--models`` models, with a drift at the middle, to predictions.jsonl and
   labels.jsonl, one raw record value per line, as a topic would hold them.
2. decode: every line through ``Replay.decode_many`` (``decode_records``, 5,000 lines per call)
   alone (the part of the pipeline that does not depend on the monitor), for a ceiling.
3. replay: ``stream_monitor.backtest.run_replay`` over both files with the default configuration
   (file merge, decode, ``PartitionState.process``, observation series, incidents,
   alerts.jsonl, report.html), as ``stream-monitor replay`` runs it. It reports events/s over
   the wall time, the CPU time this process used and what other processes used meanwhile
   (the machine is shared), the peak RSS, and what the replay kept: alert events, incidents,
   series and plotted points, the report's size.

Nothing is sent anywhere; no broker is involved. The figures are printed and written to the
``bench_replay`` section of RESULTS.md (not with ``--no-results``). ``--max-seconds`` stops the
replay early (figures then cover what was replayed, and RESULTS.md is left alone).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import model_names  # noqa: E402
from _results import machine_busy_cores_s, machine_info, update_section  # noqa: E402

from stream_monitor.backtest import DEFAULT_BATCH_SIZE, Progress, Replay, run_replay  # noqa: E402
from stream_monitor.config import MonitorConfig  # noqa: E402
from stream_monitor.gc_tuning import fewer_collections  # noqa: E402
from stream_monitor.kafka.records import RawRecord  # noqa: E402
from stream_monitor.simulate import TrafficGenerator  # noqa: E402


class _TimeUp(Exception):
    pass


class _LimitedProgress(Progress):
    """The CLI's progress line, and a time limit checked after every batch."""

    def __init__(self, deadline: float, **kw: Any) -> None:
        super().__init__(sys.stderr, **kw)
        self.deadline = deadline

    def update(self, events: int, fraction: float | None, alerts: int) -> None:
        super().update(events, fraction, alerts)
        if time.monotonic() > self.deadline:
            raise _TimeUp(events)


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def generate(folder: Path, predictions: int, models: int, seed: int) -> tuple[Path, Path, int]:
    gen = TrafficGenerator(
        seed=seed,
        drift_at=predictions // 2,
        models=model_names(models),
        rate=1000.0,
        start_time=1_700_000_000.0,
    )
    preds, labels = folder / "predictions.jsonl", folder / "labels.jsonl"
    n = 0
    with open(preds, "wb") as fp, open(labels, "wb") as fl:
        for r in gen.events(predictions):
            (fp if r.topic == "predictions" else fl).write(r.value + b"\n")
            n += 1
    return preds, labels, n


def decode_only(cfg: MonitorConfig, paths: Sequence[Path]) -> tuple[int, float]:
    r = Replay(cfg, profiles={})
    t0 = time.perf_counter()
    for path, kind in zip(paths, ("prediction", "label"), strict=True):
        # under the replay's own collector settings, like the replay stage
        with fewer_collections(), open(path, "rb") as fh:
            # in batches of 5,000 records, as the file source hands them to decode_many
            while lines := list(itertools.islice(fh, 5000)):
                r.decode_many([RawRecord(line.rstrip(b"\n")) for line in lines], kind)  # type: ignore[arg-type]
    return r.events, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--predictions", type=int, default=200_000)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="default: a temp folder, removed at the end")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (files and report)")
    ap.add_argument("--skip-decode", action="store_true", help="skip the decode-only phase")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="replay time limit")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    machine = machine_info(kafka=None)
    print(f"machine: {machine}", flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        preds, labels, n_rec = generate(work, args.predictions, args.models, args.seed)
        t_gen = time.perf_counter() - t0
        size = preds.stat().st_size + labels.stat().st_size
        print(
            f"generated {n_rec:,} records ({args.predictions:,} predictions, {args.models} "
            f"models, drift at the middle) in {t_gen:.1f} s; {size / 2**20:,.1f} MiB of JSON Lines",
            flush=True,
        )
        cfg = MonitorConfig(bootstrap_servers="unused:9092")
        decode_line = "decode only:  skipped (--skip-decode)"
        if not args.skip_decode:
            gc.collect()
            n, t = decode_only(cfg, [preds, labels])
            decode_line = f"decode only:  {n:,} records in {t:.1f} s = {n / t:,.0f} records/s"
            print(decode_line, flush=True)

        gc.collect()
        busy0, own0, wall0 = machine_busy_cores_s(), own_cpu(), time.monotonic()
        progress = _LimitedProgress(time.monotonic() + args.max_seconds)
        try:
            result = run_replay(
                cfg,
                work / "out",
                predictions=preds,
                labels=labels,
                batch_size=args.batch_size,
                partitions=args.partitions,
                progress=progress,
            )
        except _TimeUp as exc:
            print(f"time limit reached after {exc.args[0]:,} records", file=sys.stderr)
            return 1
        busy1, own1, wall1 = machine_busy_cores_s(), own_cpu(), time.monotonic()
        wall = wall1 - wall0
        others = (
            None
            if busy0 is None or busy1 is None
            else max(0.0, (busy1 - busy0 - (own1 - own0)) / wall)
        )
        r = result.replay
        series = r.recorder.series.values()
        points = sum(len(s.points) for s in series)
        report = (work / "out" / "report.html").stat().st_size
        rss = peak_rss_mib()
        lines = [
            f"replay:       {result.events:,} records in {result.wall_seconds:.1f} s = "
            f"{result.events_per_second:,.0f} events/s "
            f"(batch {args.batch_size:,}, {len(r.states)} partition state(s))",
            f"CPU:          this process {(own1 - own0) / wall:.2f} cores, other "
            "processes "
            + ("?" if others is None else f"{others:.2f} cores")
            + f" over {wall:.1f} s",
            "peak RSS:     " + ("?" if rss is None else f"{rss:,.0f} MiB (whole run)"),
            f"alerts:       {len(result.alerts):,} events, {len(result.incidents):,} "
            f"incidents, {len(result.pages()):,} pages",
            f"series:       {len(r.recorder.series):,}, {points:,} points kept "
            f"(cap {r.recorder.cap:,} each); report.html {report / 1024:,.0f} KiB",
        ]
        print("\n".join(lines), flush=True)
        if not args.no_results:
            cmd = "load_tests/bench_replay.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            body = "\n".join(
                [
                    f"`.venv/bin/python {cmd.strip()}`, {when}",
                    "",
                    f"machine: {machine}",
                    "",
                    "```",
                    f"generated:    {n_rec:,} records ({args.predictions:,} predictions, "
                    f"{args.models} models, drift at the middle), {size / 2**20:,.1f} MiB",
                    decode_line,
                    *lines,
                    "```",
                ]
            )
            update_section(
                HERE / "RESULTS.md",
                "bench_replay",
                "Backtest speed (load_tests/bench_replay.py)",
                body,
            )
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
