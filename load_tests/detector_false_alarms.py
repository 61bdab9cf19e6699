"""False alarms and detection delay of the change detectors, on synthetic streams.

    .venv/bin/python load_tests/detector_false_alarms.py [--seeds 5] [--n 200000] [--no-results]

1. **False alarms**: seeded stationary N(0,1) streams of ``--n`` values, fed in one array
   (through ``stream_monitor.stats.StreamDetector``, i.e. this package's batch detectors) to
   Page-Hinkley at river's defaults (threshold 50, delta 0.005), Page-Hinkley as the monitor
   configures it (``DetectorConfig``: threshold 100, delta 0.05) and ADWIN (delta 0.002).
   Counts every firing, and checks that river's detector of the same name, fed value by value,
   fires at exactly the same positions.
2. **Detection delay**: ``--delay-runs`` seeded streams of ``--pre`` N(0,1) values followed by
   N(0.5, 1) values; the delay is the position of the first firing at or after the shift minus
   the shift's position (a miss if none within ``--post`` values). Firings before the shift
   are counted too.
3. **The monitor's own signal**: the same stationary and shifted streams fed to a
   ``NumericFeature`` with the default ``DriftConfig`` (a reference of the first 1,000 values,
   the probability integral transform, both detectors, the 500-value cooldown and the
   agreement of both detectors within 1,000 values), in chunks of ``--chunk`` values. An
   agreement on a change away from the reference (the verdict turning to drift) is what can
   open a ``change_detectors`` incident.

No broker, no network. Rewrites the ``detector_false_alarms`` section of load_tests/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import add_results_args, machine_info, write_section  # noqa: E402
from river import drift  # noqa: E402

from stream_monitor.config import DetectorConfig, DriftConfig  # noqa: E402
from stream_monitor.monitor.feature import NumericFeature, run_detectors  # noqa: E402
from stream_monitor.stats import StreamDetector  # noqa: E402

_DC = DetectorConfig()
CONFIGS: dict[str, dict[str, Any]] = {
    "Page-Hinkley, river defaults (threshold 50, delta 0.005)": {
        "kind": "page_hinkley",
        "threshold": 50.0,
        "delta": 0.005,
    },
    f"Page-Hinkley, ours (threshold {_DC.page_hinkley_threshold:g}, "
    f"delta {_DC.page_hinkley_delta:g})": {
        "kind": "page_hinkley",
        "threshold": _DC.page_hinkley_threshold,
        "delta": _DC.page_hinkley_delta,
    },
    f"ADWIN (delta {_DC.adwin_delta:g})": {"kind": "adwin", "delta": _DC.adwin_delta},
}


def detector(spec: dict[str, Any]) -> StreamDetector:
    params = {k: v for k, v in spec.items() if k != "kind"}
    return StreamDetector(spec["kind"], **params)


def river_firings(spec: dict[str, Any], x: np.ndarray) -> list[int]:
    """River's detector of the same kind and parameters, fed value by value: the reference."""
    params = {k: v for k, v in spec.items() if k != "kind"}
    det = drift.ADWIN(**params) if spec["kind"] == "adwin" else drift.PageHinkley(**params)
    out = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


def shifted(seed: int, pre: int, post: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(10_000 + seed)
    x = rng.normal(0.0, 1.0, pre + post)
    x[pre:] += shift
    return x


def feature_run(values: np.ndarray, chunk: int, shift_at: int | None) -> dict[str, Any]:
    """Feed a NumericFeature as the monitor does; return firings, detections and agreements
    (positions in ``values``, the first ``reference_size`` values being the reference)."""
    cfg = DriftConfig()
    f = NumericFeature("x", "data_drift", cfg)
    ref = cfg.reference.size
    f.observe_reference(values[:ref].tolist())
    f.freeze(ring_size=1)
    agreements: list[int] = []
    for i in range(ref, len(values), chunk):
        col = values[i : i + chunk].tolist()
        f.ingest(col, np.zeros(len(col), dtype=np.int64))
        run_detectors([f])
        # The first row of the chunk at which the detectors' verdict turned to drift (their
        # agreement on a change away from the reference): what opens an incident.
        first = next((row for row, _, breached, _, _ in f.detector_points if breached), None)
        if first is not None:
            agreements.append(i + first)
    out: dict[str, Any] = {
        "raw": dict(f.raw_firings),
        "accepted": dict(f.detections),
        "agreements": agreements,
    }
    if shift_at is not None:
        after = [p for p in agreements if p >= shift_at]
        out["delay"] = after[0] - shift_at if after else None
        out["before"] = sum(1 for p in agreements if p < shift_at)
    return out


def fmt_delay(delays: Sequence[int | None]) -> str:
    hit = sorted(d for d in delays if d is not None)
    miss = len(delays) - len(hit)
    if not hit:
        return f"no detection ({miss} misses)"
    p90 = float(np.percentile(hit, 90))
    return f"median {statistics.median(hit):,.0f}, p90 {p90:,.0f}, max {max(hit):,}" + (
        f"; {miss} misses" if miss else ""
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200_000, help="values per stationary stream")
    ap.add_argument("--seeds", type=int, default=5, help="stationary streams (seeds 0..k-1)")
    ap.add_argument("--delay-runs", type=int, default=20, help="shifted streams")
    ap.add_argument("--pre", type=int, default=5_000, help="values before the shift")
    ap.add_argument("--post", type=int, default=5_000, help="values after the shift")
    ap.add_argument("--shift", type=float, default=0.5, help="mean shift in sd")
    ap.add_argument("--chunk", type=int, default=100, help="values per NumericFeature call")
    add_results_args(ap)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    machine = machine_info(kafka=None)
    cmd = " ".join(
        [
            ".venv/bin/python load_tests/detector_false_alarms.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )

    # 1. false alarms on stationary N(0,1)
    streams = [np.random.default_rng(seed).normal(0.0, 1.0, args.n) for seed in range(args.seeds)]
    fa: dict[str, list[int]] = {}
    same: dict[str, bool] = {}
    for name, spec in CONFIGS.items():
        ours = [detector(spec).update_many(x) for x in streams]
        fa[name] = [len(f) for f in ours]
        same[name] = all(f == river_firings(spec, x) for f, x in zip(ours, streams, strict=True))
        print(f"{name}: firings per stream {fa[name]}, same as river: {same[name]}", flush=True)

    # 2. delay on a shift
    runs = [shifted(s, args.pre, args.post, args.shift) for s in range(args.delay_runs)]
    delay: dict[str, list[int | None]] = {}
    before: dict[str, list[int]] = {}
    for name, spec in CONFIGS.items():
        delay[name], before[name] = [], []
        for x in runs:
            fired = detector(spec).update_many(x)
            same[name] = same[name] and fired == river_firings(spec, x)
            after = [p for p in fired if p >= args.pre]
            delay[name].append(after[0] - args.pre if after else None)
            before[name].append(sum(1 for p in fired if p < args.pre))
        print(f"{name}: delay {fmt_delay(delay[name])}", flush=True)

    # 3. the monitor's NumericFeature (PIT + both detectors + cooldown + agreement)
    feat_fa = [feature_run(x, args.chunk, None) for x in streams]
    feat_delay = [feature_run(x, args.chunk, args.pre) for x in runs]
    feat_delays = [r["delay"] for r in feat_delay]
    print(
        "NumericFeature agreements per stationary stream "
        f"{[len(r['agreements']) for r in feat_fa]}; delay {fmt_delay(feat_delays)}",
        flush=True,
    )
    total_s = time.monotonic() - t0

    per = f"per {args.n:,} values"
    md = [
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} — {machine}",
        "",
        f"Command: `{cmd.strip()}` (total {total_s:.0f} s)",
        "",
        f"Raw firings of the change detectors (`StreamDetector`: this package's batch ADWIN "
        f"and Page-Hinkley, each stream fed as one array) on {args.seeds} seeded "
        f"stationary N(0,1) streams of {args.n:,} values, and the delay of the first firing "
        f"after a {args.shift:g} sd mean shift ({args.delay_runs} seeded streams, "
        f"{args.pre:,} N(0,1) values then {args.post:,} shifted ones; delay in values):",
        "",
        f"| detector | false firings {per}: mean (per stream) | delay after a {args.shift:g} "
        f"sd shift | firings before the shift (of {args.pre:,} values), mean | every firing "
        "where river's detector fires (value by value) |",
        "|---|---|---|---:|---|",
    ]
    for name in CONFIGS:
        md.append(
            f"| {name} | **{statistics.mean(fa[name]):,.1f}** ({', '.join(map(str, fa[name]))}) "
            f"| {fmt_delay(delay[name])} | {statistics.mean(before[name]):.2f} "
            f"| {'yes' if same[name] else '**no**'} |"
        )
    raw_ph = [r["raw"].get("page_hinkley", 0) for r in feat_fa]
    raw_ad = [r["raw"].get("adwin", 0) for r in feat_fa]
    acc_ph = [r["accepted"].get("page_hinkley", 0) for r in feat_fa]
    acc_ad = [r["accepted"].get("adwin", 0) for r in feat_fa]
    agree = [len(r["agreements"]) for r in feat_fa]
    md += [
        "",
        "The monitor's own signal: the same streams through a `NumericFeature` with the "
        "default `DriftConfig` (the first 1,000 values are the reference; then the probability "
        "integral transform, both detectors, a 500-value cooldown per detector and agreement of "
        f"both within 1,000 values), fed in chunks of {args.chunk} values:",
        "",
        f"| figure {per} (stationary) | mean (per stream) |",
        "|---|---|",
        f"| Page-Hinkley raw firings / after the cooldown | {statistics.mean(raw_ph):.1f} / "
        f"{statistics.mean(acc_ph):.1f} ({', '.join(map(str, raw_ph))} / "
        f"{', '.join(map(str, acc_ph))}) |",
        f"| ADWIN raw firings / after the cooldown | {statistics.mean(raw_ad):.1f} / "
        f"{statistics.mean(acc_ad):.1f} ({', '.join(map(str, raw_ad))} / "
        f"{', '.join(map(str, acc_ad))}) |",
        f"| **agreements (can open a change_detectors incident)** | "
        f"**{statistics.mean(agree):.1f}** ({', '.join(map(str, agree))}) |",
        f"| delay of the first agreement after a {args.shift:g} sd shift | "
        f"{fmt_delay(feat_delays)}; agreements before the shift, mean "
        f"{statistics.mean(r['before'] for r in feat_delay):.2f} |",
    ]
    print("\n".join(md[4:]))
    write_section(
        args,
        "detector_false_alarms",
        "Detector false alarms and delay (load_tests/detector_false_alarms.py)",
        md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
