"""HDDM_A and HDDM_W (stats/drift/hddm_a.py, hddm_w.py) against river's ``drift.binary.HDDMA``
and ``drift.binary.HDDMW``: the same firings (and warnings) on seeded 0/1 and real-valued
streams fed all at once or in random batches, the same internal numbers value by value, and
plain-JSON snapshots that resume exactly and refuse malformed input."""

from __future__ import annotations

import copy
import functools
import itertools
import math
from typing import Any

import numpy as np
import orjson
import pytest
from river.drift import binary as river_binary

from stream_monitor.stats.drift.hddm_a import HDDMA
from stream_monitor.stats.drift.hddm_w import HDDMW

N = 20_000
#: Error rate of each segment of the 0/1 streams: rises and a fall.
LEVELS = (0.05, 0.25, 0.1, 0.35, 0.7)
#: Mean loss (before clipping and zeros) of each segment of the real-valued streams: the
#: McDiarmid bound of HDDM_W needs larger steps than the 0/1 streams' to fire on every rise.
LOSS_LEVELS = (0.05, 0.7, 0.05, 0.5, 1.0)
#: (kind, seed): 0/1 errors and clipped real losses with four change points each, and
#: stationary streams of both kinds.
STREAMS = [
    *[(kind, seed) for kind in ("bits", "losses") for seed in (0, 1, 2)],
    ("stationary_bits", 3),
    ("stationary_losses", 4),
]
OURS: dict[str, type[HDDMA] | type[HDDMW]] = {"HDDMA": HDDMA, "HDDMW": HDDMW}
RIVER = {"HDDMA": river_binary.HDDMA, "HDDMW": river_binary.HDDMW}
#: The defaults, both sides, and other confidences / weights for each.
PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("HDDMA", {}),
    ("HDDMA", {"two_sided_test": False}),
    ("HDDMA", {"two_sided_test": True}),
    ("HDDMA", {"drift_confidence": 0.01, "warning_confidence": 0.05, "two_sided_test": True}),
    ("HDDMA", {"drift_confidence": 1e-4, "warning_confidence": 1e-3}),
    ("HDDMW", {}),
    ("HDDMW", {"two_sided_test": True}),
    ("HDDMW", {"drift_confidence": 0.01, "warning_confidence": 0.05, "two_sided_test": True}),
    ("HDDMW", {"lambda_val": 0.01, "two_sided_test": True}),
    ("HDDMW", {"lambda_val": 0.1, "drift_confidence": 0.01, "warning_confidence": 0.05}),
]
PARAM_IDS = [
    f"{name}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'defaults'}" for name, p in PARAMS
]


@functools.cache
def _stream(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind.startswith("stationary"):
        levels: tuple[float, ...] = (0.2,)
        bounds: list[int] = []
    else:
        levels = LEVELS if kind == "bits" else LOSS_LEVELS
        bounds = [4000 * k + int(rng.integers(-1000, 1000)) for k in range(1, len(levels))]
    sizes = np.diff([0, *bounds, N])
    if kind.endswith("bits"):
        parts = [(rng.random(k) < p).astype(float) for p, k in zip(levels, sizes, strict=True)]
    else:
        # Loss-like values: gamma with the segment's mean, clipped to [0, 1], and a loss of
        # exactly 0 for a fifth of them (exact 1s are frequent in the last segment).
        parts = [
            np.clip(rng.gamma(2.0, p / 2, k), 0.0, 1.0) * (rng.random(k) >= 0.2)
            for p, k in zip(levels, sizes, strict=True)
        ]
    x = np.concatenate(parts)
    x.flags.writeable = False
    return x


@functools.cache
def _river(
    name: str, items: tuple[tuple[str, Any], ...], kind: str, seed: int
) -> tuple[list[int], np.ndarray]:
    """River fed value by value: firing indices and the warning flag after every value."""
    det = RIVER[name](**dict(items))
    fired: list[int] = []
    warnings = np.zeros(N, dtype=bool)
    for i, v in enumerate(_stream(kind, seed).tolist()):
        det.update(v)
        if det.drift_detected:
            fired.append(i)
        warnings[i] = det.warning_detected
    return fired, warnings


def _reference(
    name: str, params: dict[str, Any], kind: str, seed: int
) -> tuple[list[int], np.ndarray]:
    return _river(name, tuple(sorted(params.items())), kind, seed)


def _batches(rng: np.random.Generator, n: int) -> list[int]:
    """Cut points of ``n`` values into batches of 1 to 3,000."""
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, 3001))))
    return cuts


@pytest.mark.parametrize(("kind", "seed"), STREAMS)
@pytest.mark.parametrize(("name", "params"), PARAMS, ids=PARAM_IDS)
def test_same_firings_as_river_all_at_once(
    name: str, params: dict[str, Any], kind: str, seed: int
) -> None:
    x = _stream(kind, seed)
    fired, warnings = _reference(name, params, kind, seed)
    det = OURS[name](**params)
    assert det.update_many(x) == fired
    assert det.drift_detected == (fired[-1:] == [N - 1])
    assert det.warning_detected == warnings[-1]


@pytest.mark.parametrize(("kind", "seed"), STREAMS)
@pytest.mark.parametrize(("name", "params"), PARAMS, ids=PARAM_IDS)
def test_same_firings_as_river_in_batches(
    name: str, params: dict[str, Any], kind: str, seed: int
) -> None:
    x = _stream(kind, seed)
    fired, warnings = _reference(name, params, kind, seed)
    det = OURS[name](**params)
    got: list[int] = []
    cuts = _batches(np.random.default_rng(100 + seed), N)
    for lo, hi in itertools.pairwise(cuts):
        got += [lo + i for i in det.update_many(x[lo:hi])]
        # After every batch, the flags are river's after the batch's last value.
        assert det.drift_detected == (hi - 1 in fired)
        assert det.warning_detected == warnings[hi - 1]
    assert got == fired


def test_streams_fire_several_times() -> None:
    """The change-point streams are long enough for several firings (else the comparisons
    above would prove little)."""
    for name, params in PARAMS:
        for kind, seed in STREAMS:
            fired, warnings = _reference(name, params, kind, seed)
            if not kind.startswith("stationary"):
                assert len(fired) >= 2, (name, params, kind, seed)
            assert warnings.any() or not fired
    assert len(_reference("HDDMA", {}, "bits", 0)[0]) >= 3
    assert len(_reference("HDDMW", {}, "bits", 0)[0]) >= 3
    # A fall fires only the two-sided test.
    for name in OURS:
        one = _reference(name, {}, "bits", 1)[0]
        two = _reference(name, {"two_sided_test": True}, "bits", 1)[0]
        assert len(two) > len(one)


def _river_state_a(det: Any) -> dict[str, Any]:
    return {
        "n": det._z.n,
        "mean": det._z.get(),
        "min_n": det._x_min.n,
        "min_mean": det._x_min.get(),
        "max_n": det._x_max.n,
        "max_mean": det._x_max.get(),
    }


def _river_state_w(det: Any) -> dict[str, Any]:
    def sample(s: Any) -> dict[str, Any]:
        return {"ewma": s.ewma, "ibc": s.ibc, "started": s.is_init}

    return {
        "total": sample(det._total),
        "rise_before": sample(det._s1_incr),
        "rise_after": sample(det._s2_incr),
        "fall_before": sample(det._s1_decr),
        "fall_after": sample(det._s2_decr),
        "rise_cut": None if math.isinf(det._incr_cutpoint) else det._incr_cutpoint,
        "fall_cut": None if math.isinf(det._decr_cutpoint) else det._decr_cutpoint,
    }


@pytest.mark.parametrize("kind", ["bits", "losses"])
@pytest.mark.parametrize(("name", "params"), PARAMS, ids=PARAM_IDS)
def test_state_is_rivers_value_by_value(name: str, params: dict[str, Any], kind: str) -> None:
    """Every number of the state equals river's (to the bit) after every value, firings and the
    restarts after them included."""
    x = _stream(kind, 0)[3000:7000].tolist()  # across a change point
    ours, theirs = OURS[name](**params), RIVER[name](**params)
    river_state = _river_state_a if name == "HDDMA" else _river_state_w
    for v in x:
        ours.update_many(np.array([v]))
        theirs.update(v)
        snap = ours.snapshot()
        expected = river_state(theirs)
        assert {k: snap[k] for k in expected} == expected
        assert ours.drift_detected == theirs.drift_detected
        assert ours.warning_detected == theirs.warning_detected


def _assert_plain(obj: Any) -> None:
    """JSON-compatible plain data only: no numpy scalars, no inf/nan."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_plain(v)
    else:
        assert obj is None or type(obj) in (str, int, float, bool), type(obj)
        if type(obj) is float:
            assert math.isfinite(obj)


@pytest.mark.parametrize(("kind", "seed"), [("bits", 0), ("losses", 1), ("stationary_losses", 4)])
@pytest.mark.parametrize(("name", "params"), PARAMS, ids=PARAM_IDS)
def test_snapshot_resumes_exactly(name: str, params: dict[str, Any], kind: str, seed: int) -> None:
    x = _stream(kind, seed)
    fired, warnings = _reference(name, params, kind, seed)
    rng = np.random.default_rng(7 + seed)
    # Random cuts, the fresh detector, and right after a firing (restart pending).
    cuts = sorted({0, N - 1, *rng.integers(1, N, 6).tolist(), *[f + 1 for f in fired[:2]]})
    for cut in cuts:
        det = OURS[name](**params)
        before = det.update_many(x[:cut])
        snap = det.snapshot()
        _assert_plain(snap)
        loaded = orjson.loads(orjson.dumps(snap))
        assert loaded == snap
        restored = OURS[name].from_snapshot(loaded)
        assert restored.snapshot() == snap
        assert restored.params == det.params == {**restored.params, **params}
        after = [cut + i for i in restored.update_many(x[cut:])]
        assert before + after == fired
        assert restored.warning_detected == warnings[-1]
        # And the original, untouched by the snapshot, carries on the same.
        assert [cut + i for i in det.update_many(x[cut:])] == after


def test_fresh_snapshots() -> None:
    a, w = HDDMA().snapshot(), HDDMW().snapshot()
    assert a == {
        "v": 1,
        "params": {"drift_confidence": 0.001, "warning_confidence": 0.005, "two_sided_test": False},
        "drift_detected": False,
        "warning_detected": False,
        "n": 0,
        "mean": 0.0,
        "min_n": 0,
        "min_mean": 0.0,
        "max_n": 0,
        "max_mean": 0.0,
    }
    fresh = {"ewma": 0.0, "ibc": 1.0, "started": False}
    assert w == {
        "v": 1,
        "params": {
            "drift_confidence": 0.001,
            "warning_confidence": 0.005,
            "lambda_val": 0.05,
            "two_sided_test": False,
        },
        "drift_detected": False,
        "warning_detected": False,
        **{k: fresh for k in ("total", "rise_before", "rise_after", "fall_before", "fall_after")},
        "rise_cut": None,
        "fall_cut": None,
    }
    assert HDDMA.from_snapshot(a).snapshot() == a
    assert HDDMW.from_snapshot(w).snapshot() == w


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_reset_is_construction_state(name: str) -> None:
    params: dict[str, Any] = {
        "drift_confidence": 0.01,
        "warning_confidence": 0.05,
        "two_sided_test": True,
    }
    det = OURS[name](**params)
    assert det.update_many(_stream("bits", 0))
    det._reset()
    det.drift_detected = False
    assert det.snapshot() == OURS[name](**params).snapshot()


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_input_types_and_empty_batches(name: str) -> None:
    x = _stream("bits", 2)
    det = OURS[name]()
    as_bool = OURS[name]().update_many(x.astype(bool))
    as_int = OURS[name]().update_many(x.astype(np.int64).reshape(-1, 1))
    assert as_bool == as_int == det.update_many(x)
    snap = det.snapshot()
    assert det.update_many(np.array([])) == []
    assert det.snapshot() == snap


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_bad_parameters(name: str) -> None:
    for bad in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError):
            OURS[name](drift_confidence=bad)
        with pytest.raises(ValueError):
            OURS[name](warning_confidence=bad)
    if name == "HDDMW":
        for bad in (-0.1, 1.5):
            with pytest.raises(ValueError):
                HDDMW(lambda_val=bad)


def _mid_snapshot(name: str) -> dict[str, Any]:
    det = OURS[name](two_sided_test=True)
    det.update_many(_stream("losses", 0)[:5000])
    snap = det.snapshot()
    OURS[name].from_snapshot(snap)  # valid as it is
    return snap


def _refused(name: str, snap: Any) -> None:
    with pytest.raises(ValueError):
        OURS[name].from_snapshot(snap)


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_from_snapshot_refuses_wrong_version(name: str) -> None:
    snap = _mid_snapshot(name)
    for v in (0, 2, "1", 1.0, True, None):
        _refused(name, {**snap, "v": v})
    _refused(name, {k: v for k, v in snap.items() if k != "v"})


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_from_snapshot_refuses_missing_and_extra_fields(name: str) -> None:
    snap = _mid_snapshot(name)
    for key in snap:
        _refused(name, {k: v for k, v in snap.items() if k != key})
    for key, value in snap.items():
        if isinstance(value, dict):
            for inner in value:
                broken = copy.deepcopy(snap)
                del broken[key][inner]
                _refused(name, broken)
            broken = copy.deepcopy(snap)
            broken[key]["extra"] = 1.0
            _refused(name, broken)
    _refused(name, {**snap, "extra": 1})
    _refused(name, None)
    _refused(name, [])
    _refused(name, "snapshot")


@pytest.mark.parametrize("name", ["HDDMA", "HDDMW"])
def test_from_snapshot_refuses_wrong_types(name: str) -> None:
    snap = _mid_snapshot(name)
    paths: list[tuple[str, ...]] = [
        (k,) for k in snap if k != "v" and not isinstance(snap[k], dict)
    ]
    paths += [(k, inner) for k in snap if isinstance(snap[k], dict) for inner in snap[k]]

    def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        broken = copy.deepcopy(snap)
        target = broken
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return broken

    for path in paths:
        _refused(name, with_value(path, "0.5"))  # a string where a number or flag goes
        _refused(name, with_value(path, [0.5]))
        _refused(name, with_value(path, {"x": 0.5}))
        current: Any = snap
        for k in path:
            current = current[k]
        if type(current) is bool:
            _refused(name, with_value(path, 1))
            _refused(name, with_value(path, None))
        elif type(current) is int:
            _refused(name, with_value(path, float(current)))
            _refused(name, with_value(path, True))
        elif type(current) is float:
            _refused(name, with_value(path, True))
            _refused(name, with_value(path, math.nan))
            _refused(name, with_value(path, math.inf))
            if path[-1] not in ("rise_cut", "fall_cut"):
                _refused(name, with_value(path, None))
    # A whole object in the wrong shape: a list instead of a mapping.
    _refused(name, {**snap, "params": list(snap["params"].values())})
    if name == "HDDMW":
        _refused(name, {**snap, "total": list(snap["total"].values())})


def test_from_snapshot_refuses_inconsistent_hddma_state() -> None:
    snap = _mid_snapshot("HDDMA")
    n = snap["n"]
    for bad in (
        {"n": -1},
        {"min_n": n + 1},
        {"max_n": n + 1},
        {"min_n": 0},
        {"max_n": 0},
        {"n": 0},
        {"params": {**snap["params"], "drift_confidence": 1.5}},
        {"params": {**snap["params"], "warning_confidence": 0.0}},
    ):
        _refused("HDDMA", {**snap, **bad})


def test_from_snapshot_refuses_inconsistent_hddmw_state() -> None:
    snap = _mid_snapshot("HDDMW")
    fresh = {"ewma": 0.0, "ibc": 1.0, "started": False}
    for bad in (
        {"total": {**snap["total"], "ibc": 0.0}},
        {"rise_after": {**snap["rise_after"], "ibc": 1.5}},
        {"fall_after": {**fresh, "ewma": 0.5}},
        {"total": fresh},
        {"rise_before": fresh},
        {"fall_before": fresh},
        {"rise_cut": None},
        {"fall_cut": None},
        {"params": {**snap["params"], "lambda_val": 1.5}},
        {"params": {**snap["params"], "drift_confidence": 0.0}},
    ):
        _refused("HDDMW", {**snap, **bad})
