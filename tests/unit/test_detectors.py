from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from stream_monitor.stats import Debouncer, StreamDetector
from stream_monitor.stats.detectors import BINARY_KINDS, KINDS, UNIT_INTERVAL_KINDS

CHANGE = 2000


def _shift_stream(seed: int = 7, shift: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, CHANGE), rng.normal(shift, 1.0, CHANGE)])


def _stationary(seed: int = 7, n: int = 20_000) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def test_adwin_detects_shift_once_with_bounded_delay() -> None:
    det = StreamDetector("adwin")
    fired = det.update_many(_shift_stream())
    assert fired == [2015]  # measured for seed 7 with river 0.26 defaults
    assert all(CHANGE < p <= CHANGE + 300 for p in fired)
    assert det.n_seen == 2 * CHANGE
    assert det.n_detections == 1
    assert det.mean_before_last_detection is not None
    assert det.mean_after_last_detection is not None
    assert abs(det.mean_before_last_detection) < 0.1  # pre-change level
    assert det.mean_after_last_detection > 1.0  # recent level, well above


def test_adwin_stationary_is_silent() -> None:
    det = StreamDetector("adwin")
    assert det.update_many(_stationary()) == []
    assert det.n_detections == 0
    assert det.mean_before_last_detection is None and det.mean_after_last_detection is None


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_direction_of_downward_shift(kind: str) -> None:
    x = _shift_stream(seed=11, shift=-2.0)
    first = next(p for p in StreamDetector(kind).update_many(x) if p >= CHANGE)
    assert CHANGE < first <= CHANGE + 300
    det = StreamDetector(kind)
    assert det.update_many(x[: first + 1])[-1] == first  # state right after the first firing
    assert det.mean_after_last_detection < det.mean_before_last_detection - 1.0  # type: ignore[operator]


def test_page_hinkley_fires_on_stationary_data() -> None:
    # Documents why raw firings must not become alerts: default Page-Hinkley fires repeatedly
    # on pure N(0, 1) noise.
    det = StreamDetector("page_hinkley")
    fired = det.update_many(_stationary())
    assert len(fired) == det.n_detections == 16  # measured for seed 7, river 0.26 defaults
    assert fired[0] == 924


def test_page_hinkley_detects_shift() -> None:
    det = StreamDetector("page_hinkley")
    fired = det.update_many(_shift_stream())
    after = [p for p in fired if p >= CHANGE]
    assert after[0] == 2017  # measured for seed 7
    assert CHANGE < after[0] <= CHANGE + 300
    assert det.mean_after_last_detection > det.mean_before_last_detection + 1.0  # type: ignore[operator]


def test_nan_skipped_and_positions_index_input() -> None:
    x = _shift_stream()
    with_nan = np.insert(x, [0, 10, 2010, 2010, 3000], np.nan)  # 4 NaNs before x[2015]
    det = StreamDetector("adwin")
    assert det.update_many(with_nan) == [2015 + 4]
    assert with_nan[2019] == x[2015]
    assert det.n_seen == x.size


def test_chunked_feeding_matches_single_call() -> None:
    x = _shift_stream()
    whole = StreamDetector("page_hinkley").update_many(x)
    det = StreamDetector("page_hinkley")
    chunked: list[int] = []
    offset = 0
    for chunk in np.array_split(x, 13):
        chunked += [offset + p for p in det.update_many(chunk)]
        offset += chunk.size
    assert chunked == whole
    assert det.n_seen == x.size


def test_params_passed_through() -> None:
    x = _shift_stream()
    strict = StreamDetector("page_hinkley", threshold=1e9)
    assert strict.params == {"threshold": 1e9}
    assert strict.update_many(x) == []
    kswin = StreamDetector("kswin", alpha=1e-5, seed=3)
    assert kswin.kind == "kswin"
    assert any(CHANGE <= p <= CHANGE + 300 for p in kswin.update_many(x))
    with pytest.raises(ValueError):
        StreamDetector("no_such_kind")
    with pytest.raises(TypeError):
        StreamDetector("adwin", no_such_param=1)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("adwin", {}),
        ("page_hinkley", {}),
        ("kswin", {"seed": 42}),
    ],
)
def test_snapshot_round_trip_mid_stream(kind: str, params: dict[str, int]) -> None:
    x = np.concatenate([_stationary(seed=3, n=3000), _shift_stream(seed=5)])
    split = 3000 + CHANGE - 40  # just before the change
    orig = StreamDetector(kind, **params)
    orig.update_many(x[:split])
    snap = json.loads(json.dumps(orig.snapshot()))
    assert snap["v"] == 3 and snap["kind"] == kind
    restored = StreamDetector.from_snapshot(snap)
    assert (restored.n_seen, restored.n_detections) == (orig.n_seen, orig.n_detections)
    rest_orig = orig.update_many(x[split:])
    rest_restored = restored.update_many(x[split:])
    assert rest_orig == rest_restored
    assert any(p >= 40 for p in rest_orig)  # the shift is detected after the split
    assert restored.mean_before_last_detection == orig.mean_before_last_detection
    assert restored.mean_after_last_detection == orig.mean_after_last_detection
    assert restored.n_detections == orig.n_detections


def test_snapshot_refuses_unknown_version_and_wrong_state() -> None:
    snap = StreamDetector("adwin").snapshot()
    with pytest.raises(ValueError):
        StreamDetector.from_snapshot({**snap, "v": 1})
    ph_state = StreamDetector("page_hinkley").snapshot()["state"]
    with pytest.raises(ValueError):
        StreamDetector.from_snapshot({**snap, "state": ph_state})
    kswin = StreamDetector("kswin").snapshot()
    with pytest.raises(ValueError):
        StreamDetector.from_snapshot({**kswin, "state": snap["state"]})
    ddm_state = StreamDetector("ddm").snapshot()["state"]
    with pytest.raises(ValueError):
        StreamDetector.from_snapshot({**kswin, "state": ddm_state})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_snapshot_is_plain_data(kind: str) -> None:
    """No pickle anywhere: every kind's state survives JSON unchanged, and is refused when it
    is not the kind's."""
    det = StreamDetector(kind)
    x = _shift_stream()
    if kind in BINARY_KINDS:
        x = (x > np.median(x)).astype(float)
    elif kind in UNIT_INTERVAL_KINDS:
        x = np.clip((x - x.min()) / (x.max() - x.min()), 0.0, 1.0)
    det.update_many(x)
    snap = det.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert isinstance(snap["state"], dict)
    with pytest.raises(ValueError):
        StreamDetector.from_snapshot({**snap, "state": "gASVBQAAAAAAAAB9lC4="})  # a pickle


def test_debouncer_merges_close_firings() -> None:
    d = Debouncer(cooldown=50)
    offered = [100, 101, 149, 150, 151, 199, 200, 1000]
    assert [d.offer(p) for p in offered] == [True, False, False, True, False, False, True, True]
    assert d.last_accepted == 1000
    assert [Debouncer(cooldown=0).offer(p) for p in (5, 5, 6)] == [True, True, True]


def test_debouncer_on_page_hinkley_firings() -> None:
    fired = StreamDetector("page_hinkley").update_many(_stationary())
    d = Debouncer(cooldown=1000)
    accepted = [p for p in fired if d.offer(p)]
    assert 0 < len(accepted) < len(fired)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(accepted))
    # every rejected firing is within the cooldown of the last accepted one before it
    for p in set(fired) - set(accepted):
        assert p - max(a for a in accepted if a <= p) < 1000


def test_debouncer_snapshot_round_trip() -> None:
    d = Debouncer(cooldown=10)
    d.offer(5)
    r = Debouncer.from_snapshot(json.loads(json.dumps(d.snapshot())))
    assert (r.cooldown, r.last_accepted) == (10, 5)
    assert [r.offer(p) for p in (14, 15)] == [d.offer(p) for p in (14, 15)] == [False, True]
    fresh = Debouncer.from_snapshot(Debouncer(3).snapshot())
    assert fresh.last_accepted is None and fresh.offer(0)
    with pytest.raises(ValueError):
        Debouncer.from_snapshot({**d.snapshot(), "v": 0})


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_value_by_value_matches_one_call(kind: str) -> None:
    """Calls of a few values (the per-window detectors) take a plain-Python path; it fires at
    the same positions and reports the same levels as one array call."""
    x = np.concatenate([_shift_stream(seed=4), _shift_stream(seed=5, shift=-1.5)])
    x[[5, 700, 2100]] = np.nan
    whole = StreamDetector(kind)
    expected = whole.update_many(x)
    det = StreamDetector(kind)
    got = [i for i in range(len(x)) if det.update_many(x[i : i + 1])]
    assert got == expected and len(expected) >= 2
    assert det.n_seen == whole.n_seen == len(x) - 3
    assert det.mean_before_last_detection == pytest.approx(whole.mean_before_last_detection)
    assert det.mean_after_last_detection == pytest.approx(whole.mean_after_last_detection)
    snap = json.loads(json.dumps(det.snapshot()))
    assert StreamDetector.from_snapshot(snap).update_many(x[:100]) == whole.update_many(x[:100])
