"""How large a partition's snapshot and its /metrics scrape get on worst-case input.

    .venv/bin/python load_tests/state_bounds.py [--models 3] [--features 100] [--batches 8]

One PartitionState, no broker. Every name is at its 128-character limit (feature names, model
versions, class labels, segment values; event ids at 256), one feature in three is categorical
with half of its values 200-character random strings (each distinct), 1 % of the numeric values
are around 1e300, predictions carry hundreds of distinct class labels, and one segment key
(``region``) sees 500 distinct values (its monitors are capped at ``segments.max_values``, 20,
plus ``(other)``); half of the predictions get a label. Prints the snapshot size (whole, per
model, per feature kind, the model without its features) and the scrape size. Nothing is
asserted; the figures go into load_tests/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import random
import string
import threading

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.monitor.partition import PartitionState


def _name(i: int) -> str:
    return (f"f{i}-" + "é" * 200)[:128]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--batches", type=int, default=8, help="batches of 3,000 predictions")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "segments": {"keys": ["region"]}}
    )
    st = PartitionState(0, cfg)
    for b in range(args.batches):
        preds, labels = [], []
        for i in range(3000):
            k = b * 3000 + i
            feats: dict[str, object] = {}
            for f in range(args.features):
                if f % 3 == 0:
                    long = rng.random() < 0.5
                    feats[_name(f)] = (
                        "".join(rng.choice(string.ascii_letters) for _ in range(200))
                        if long
                        else rng.choice("abc")
                    )
                else:
                    feats[_name(f)] = rng.gauss(0, 1) * (1e300 if rng.random() < 0.01 else 1)
            model = (f"m{k % args.models}" + "x" * 300)[:256]
            event_id = (f"e{k}" + "z" * 300)[:256]
            preds.append(
                PredictionEvent.model_validate(
                    {
                        "event_id": event_id,
                        "model_id": model,
                        "timestamp": 1.7e9 + k,
                        "features": feats,
                        "prediction": {"label": "c" * 120 + str(k % 300), "score": rng.random()},
                        "segments": {"region": "r" * 120 + str(k % 500)},
                        "model_version": "v" * 128,
                    }
                )
            )
            if k % 2:
                labels.append(
                    LabelEvent.model_validate(
                        {
                            "event_id": (f"e{k - 1}" + "z" * 300)[:256],
                            "model_id": model,
                            "timestamp": 1.7e9 + k,
                            "label": "c" * 120 + str(k % 290),
                        }
                    )
                )
        st.process(preds, labels)
    snap = orjson.dumps(st.snapshot())
    reg = CollectorRegistry()
    reg.register(StateCollector(lambda: {0: st}, threading.Lock()))
    text = generate_latest(reg).decode()
    lines = text.splitlines()
    n_models = len(st.models)
    print(f"models {n_models}, predictions awaiting labels {len(st.join):,}")
    print(f"snapshot {len(snap):,} bytes, per model {len(snap) // max(n_models, 1):,}")
    m = next(iter(st.models.values()))
    sizes = {
        kind: [len(orjson.dumps(f.snapshot())) for f in m.features.values() if f.type_name == kind]
        for kind in ("numeric", "categorical")
    }
    whole = len(orjson.dumps(m.snapshot()))
    own = whole - sum(len(orjson.dumps(s.snapshot())) for s in m.segments.values())
    print(
        f"one model: {whole:,} bytes with its {len(m.segments)} segment monitors, {own:,} "
        f"without them; numeric feature max {max(sizes['numeric'], default=0):,}, "
        f"categorical max {max(sizes['categorical'], default=0):,}"
    )
    print(f"/metrics {len(text):,} bytes, {len(lines):,} lines, longest {max(map(len, lines))}")


if __name__ == "__main__":
    main()
