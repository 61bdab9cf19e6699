"""False alarms of the whole drift pipeline on stationary traffic, by signal and configuration.

Feeds ``--predictions`` stationary predictions (TrafficGenerator without drift: three models,
their labels included) through ``PartitionState`` in batches of 2,000 records, once per
configuration, and counts every alert incident opened, by (kind, signal). No broker: this
measures the statistics, not Kafka. Incidents are counted as the statistics open them: one per
feature and no cooldown (``ALERTS``), so the thresholds are compared, not the alert layer's
grouping and cooldown, which cut pages further (alert_noise.py measures those).

    .venv/bin/python load_tests/stable_false_alarms.py [--predictions 300000]

Configurations: the defaults (calibrated thresholds at 0.1 % per window, minimum effect PSI 0.1,
window detectors on), the same with windows of 100 events, and fixed thresholds (PSI 0.25 /
0.1) at windows of 100 events, to show why thresholds are calibrated.
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

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults (window 1,000, calibrated)": {},
    "window 100, calibrated": {"window": {"size": 100}},
    "window 100, fixed PSI 0.25": {
        "window": {"size": 100},
        "thresholds": {"mode": "fixed"},
    },
    "window 100, fixed PSI 0.1": {
        "window": {"size": 100},
        "thresholds": {"mode": "fixed", "fixed": {"psi": 0.1}},
    },
}


#: One incident per feature, no cooldown: every false alarm of a statistic is counted.
ALERTS: dict[str, Any] = {"group_features": False, "cooldown_seconds": 0}


def run(drift: dict[str, Any], evs: list[PredictionEvent | LabelEvent]) -> dict[str, Any]:
    cfg = MonitorConfig(bootstrap_servers="unused:9092", drift=drift, alerts=ALERTS)
    st = PartitionState(0, cfg)
    opened: collections.Counter[str] = collections.Counter()
    t0 = time.process_time()
    for preds, labels in batches(evs, 2000):
        for a in st.process(preds, labels):
            if a.status == "firing":
                opened[f"{a.kind}/{a.signal}"] += 1
    cpu = time.process_time() - t0
    windows = sum(
        m.pane_clock.windows_closed for m in st.models.values() if m.pane_clock is not None
    )
    judged = sum(len(m.features) + len(m.outputs) for m in st.models.values())
    return {"opened": opened, "windows": windows, "features": judged, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--predictions", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=11)
    add_results_args(ap)
    args = ap.parse_args(argv)
    evs = decoded_events(args.predictions, args.seed)
    rows = []
    for name, drift in CONFIGS.items():
        r = run(drift, evs)
        total = sum(r["opened"].values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(r["opened"].items())) or "-"
        rows.append(
            f"| {name} | {r['windows']:,} | {r['features']} | {total} | {detail} | {r['cpu']:.1f} |"
        )
        print(rows[-1], flush=True)
    md = [
        machine_info(None),
        "",
        f"Command: `.venv/bin/python load_tests/stable_false_alarms.py --predictions "
        f"{args.predictions} --seed {args.seed}`. {args.predictions:,} stationary predictions of "
        "3 models (fraud-detector, churn-model, eta-regressor) and their labels, no drift. "
        "Alerts: one incident per feature, no cooldown (the statistics' own false alarms).",
        "",
        "| configuration | windows closed (all models) | features + outputs monitored | "
        "incidents opened | by kind/signal | CPU s |",
        "|---|---:|---:|---:|---|---:|",
        *rows,
    ]
    write_section(
        args,
        "stable_false_alarms",
        "False alarms on stationary traffic (load_tests/stable_false_alarms.py)",
        md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
