"""How many alerts people would get: the alert lifecycle's effect on the number of pages.

Feeds the same synthetic traffic (TrafficGenerator: three models, their labels) through
``PartitionState`` in batches of 2,000 records under two alerting configurations, and counts
the ``firing`` events (what pages someone), by severity, before and after the injected drift:

- "per feature, no cooldown": one incident per (model, kind, feature), resolved and re-fired
  freely: how alerting worked before rules, grouping and cooldowns;
- "defaults": a model's features grouped into one incident per kind, a one-hour event-time
  cooldown after a resolution.

Streams: stationary traffic; traffic with a drift half-way; the drift with windows of 100
events (noisy statistics that hover around their thresholds). No broker: this measures the
alerting layer, not Kafka.

    .venv/bin/python load_tests/alert_noise.py [--predictions 200000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import batches, decoded_events  # noqa: E402
from _results import add_results_args, machine_info, write_section  # noqa: E402

from stream_monitor.config import MonitorConfig  # noqa: E402
from stream_monitor.events.schema import LabelEvent, PredictionEvent  # noqa: E402
from stream_monitor.monitor.partition import PartitionState  # noqa: E402

ALERTING: dict[str, dict[str, Any]] = {
    "per feature, no cooldown": {"group_features": False, "cooldown_seconds": 0},
    "defaults (grouped, cooldown 1 h)": {},
}


def run(
    alerts: dict[str, Any],
    drift: dict[str, Any],
    evs: list[PredictionEvent | LabelEvent],
    drift_time: float | None,
) -> dict[str, Any]:
    cfg = MonitorConfig(bootstrap_servers="unused:9092", drift=drift, alerts=alerts)
    st = PartitionState(0, cfg)
    fired: collections.Counter[str] = collections.Counter()
    before = 0
    t0 = time.process_time()
    for preds, labels in batches(evs, 2000):
        for a in st.process(preds, labels):
            if a.status == "firing":
                fired[a.severity] += 1
                if drift_time is not None and a.observed_at < drift_time:
                    before += 1
    return {
        "fired": fired,
        "before": before,
        "suppressed": st.tracker.suppressed,
        "cpu": time.process_time() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--predictions", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=11)
    add_results_args(ap)
    args = ap.parse_args(argv)
    n = args.predictions
    half = n // 2
    rate = 100.0  # TrafficGenerator's default: predictions per second of event time
    streams = {
        "stationary": (decoded_events(n, args.seed, None), {}, None),
        "drift half-way": (decoded_events(n, args.seed, half), {}, 1_700_000_000.0 + half / rate),
    }
    streams["drift half-way, windows of 100"] = (
        streams["drift half-way"][0],
        {"window": {"size": 100}},
        streams["drift half-way"][2],
    )
    rows = []
    for sname, (evs, drift, drift_time) in streams.items():
        for aname, alerts in ALERTING.items():
            r = run(alerts, drift, evs, drift_time)
            total = sum(r["fired"].values())
            by = ", ".join(f"{k} {v}" for k, v in sorted(r["fired"].items())) or "-"
            pre = "-" if drift_time is None else str(r["before"])
            rows.append(
                f"| {sname} | {aname} | {total} | {by} | {pre} | {r['suppressed']} | "
                f"{r['cpu']:.1f} |"
            )
            print(rows[-1], flush=True)
    md = [
        machine_info(None),
        "",
        f"Command: `.venv/bin/python load_tests/alert_noise.py --predictions {n} --seed "
        f"{args.seed}`. {n:,} predictions of 3 models (fraud-detector, churn-model, "
        "eta-regressor) and their labels; the drift (one input feature per model shifts, "
        "accuracy drops) starts at prediction "
        f"{half:,}. Firing events are what would page someone.",
        "",
        "| stream | alerting | firing events | by severity | before the drift | "
        "held by cooldown | CPU s |",
        "|---|---|---:|---|---:|---:|---:|",
        *rows,
    ]
    write_section(
        args,
        "alert_noise",
        "Pages per configuration: grouping and cooldown (load_tests/alert_noise.py)",
        md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
