"""Our DDM and EDDM against river's ``drift.binary.DDM`` / ``EDDM``, the reference, on seeded
0/1 error streams: same firings value by value, in batches and across snapshots."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from river import drift

from stream_monitor.stats.drift.ddm import DDM
from stream_monitor.stats.drift.eddm import EDDM

Detector = DDM | EDDM

RIVER: dict[type[Detector], Callable[..., Any]] = {
    DDM: drift.binary.DDM,
    EDDM: drift.binary.EDDM,
}

DDM_PARAMS: list[dict[str, Any]] = [
    {},
    {"warm_start": 100, "warning_threshold": 1.5, "drift_threshold": 2.5},
    {"warm_start": 0},
    {"warm_start": 500, "warning_threshold": 2.5, "drift_threshold": 4.0},
]
EDDM_PARAMS: list[dict[str, Any]] = [
    {},
    {"alpha": 0.8, "beta": 0.7},
    {"warm_start": 100, "alpha": 0.9, "beta": 0.85},
    {"warm_start": 0, "alpha": 0.9, "beta": 0.9},
]
CASES = [(DDM, p) for p in DDM_PARAMS] + [(EDDM, p) for p in EDDM_PARAMS]
CASE_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CASES)]
SEEDS = (0, 1, 2, 3)


def _errors(seed: int, length: int = 20_000, *, staircase: bool = True) -> np.ndarray:
    """A 0/1 error stream (int8) with 3 or 4 change points of the error rate.

    ``staircase``: every change raises the rate (DDM's running rate since its last firing must
    be exceeded to fire again); otherwise low and high rates alternate (down and up changes).
    """
    rng = np.random.default_rng(seed)
    n_parts = int(rng.integers(4, 6))
    base = length // n_parts
    cuts = base * np.arange(1, n_parts) + rng.integers(-base // 4, base // 4, n_parts - 1)
    bounds = [0, *cuts.tolist(), length]
    if staircase:
        rates = 0.02 + np.cumsum(rng.uniform(0.06, 0.14, n_parts))
    else:
        low = rng.uniform(0.02, 0.15, n_parts)
        rates = np.where(np.arange(n_parts) % 2 == 1, low + rng.uniform(0.15, 0.35, n_parts), low)
    parts = [
        (rng.random(hi - lo) < rate).astype(np.int8)
        for lo, hi, rate in zip(bounds[:-1], bounds[1:], rates, strict=True)
    ]
    return np.concatenate(parts)


def _stationary(seed: int, length: int = 20_000, rate: float = 0.2) -> np.ndarray:
    return (np.random.default_rng(seed).random(length) < rate).astype(np.int8)


def _river_firings(det: Any, x: np.ndarray) -> list[int]:
    fired = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            fired.append(i)
    return fired


def _random_batches(det: Detector, x: np.ndarray, rng: np.random.Generator) -> list[int]:
    fired: list[int] = []
    lo = 0
    while lo < len(x):
        hi = lo + int(rng.integers(1, 3001))
        fired += [lo + i for i in det.update_many(x[lo:hi])]
        lo = hi
    return fired


def _assert_plain(value: Any) -> None:
    """JSON-compatible plain data only: no numpy scalars, no inf or nan."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), repr(value)
        if type(value) is float:
            assert math.isfinite(value)


@pytest.mark.parametrize(("cls", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("staircase", [True, False], ids=["staircase", "alternating"])
def test_fires_where_river_fires(
    cls: type[Detector], params: dict[str, Any], seed: int, staircase: bool
) -> None:
    x = _errors(seed, staircase=staircase)
    expected = _river_firings(RIVER[cls](**params), x)
    assert len(expected) >= (2 if staircase else 1), "river's detector must fire on the stream"
    assert cls(**params).update_many(x) == expected
    assert cls(**params).update_many(x.astype(float)) == expected
    rng = np.random.default_rng(1000 + seed)
    for _ in range(3):
        assert _random_batches(cls(**params), x, rng) == expected


@pytest.mark.parametrize(("cls", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", (10, 11))
def test_stationary_stream(cls: type[Detector], params: dict[str, Any], seed: int) -> None:
    x = _stationary(seed)
    expected = _river_firings(RIVER[cls](**params), x)
    assert cls(**params).update_many(x) == expected
    assert _random_batches(cls(**params), x, np.random.default_rng(seed)) == expected


@pytest.mark.parametrize(("cls", "params"), CASES, ids=CASE_IDS)
def test_flags_after_every_value_match_river(cls: type[Detector], params: dict[str, Any]) -> None:
    """Fed one value per call, ``drift_detected`` and ``warning_detected`` follow river's."""
    x = _errors(5, length=6000)
    ref = RIVER[cls](**params)
    det = cls(**params)
    warnings = 0
    for i, v in enumerate(x.tolist()):
        ref.update(v)
        assert det.update_many(x[i : i + 1]) == ([0] if ref.drift_detected else [])
        assert det.drift_detected == ref.drift_detected, i
        assert det.warning_detected == ref.warning_detected, i
        warnings += ref.warning_detected
    # With alpha == beta, EDDM fires wherever it would warn.
    assert warnings or (cls is EDDM and params["alpha"] == params["beta"])


def test_constant_streams() -> None:
    """All successes, all errors, and a lone error after a long run of successes."""
    lone = np.zeros(3000, dtype=np.int8)
    lone[2500] = 1
    for x in (np.zeros(3000, dtype=np.int8), np.ones(3000, dtype=np.int8), lone):
        for cls, params in CASES:
            assert cls(**params).update_many(x) == _river_firings(RIVER[cls](**params), x)


@pytest.mark.parametrize("cls", [DDM, EDDM])
def test_params_and_defaults_are_rivers(cls: type[Detector]) -> None:
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(RIVER[cls]).parameters
    assert tuple(ours) == tuple(theirs) == cls.PARAMS
    for name in cls.PARAMS:
        assert ours[name].default == theirs[name].default
    assert cls().params == {k: v.default for k, v in theirs.items()}


def test_eddm_refuses_alpha_below_beta() -> None:
    with pytest.raises(ValueError):
        EDDM(alpha=0.8, beta=0.9)


@pytest.mark.parametrize(("cls", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", (0, 7))
def test_snapshot_round_trip_continues_identically(
    cls: type[Detector], params: dict[str, Any], seed: int
) -> None:
    x = _errors(seed)
    full = cls(**params).update_many(x)
    assert full
    rng = np.random.default_rng(seed)
    # Inside the first warm-up, right after a firing, right before one, and random points.
    cuts = [0, 10, full[0] + 1, full[-1], len(x)]
    cuts += rng.integers(1, len(x), 6).tolist()
    for cut in cuts:
        det = cls(**params)
        head = _random_batches(det, x[:cut], rng)
        snap = det.snapshot()
        _assert_plain(snap)
        assert snap["v"] == 1
        assert snap["params"] == det.params
        back = orjson.loads(orjson.dumps(snap))
        assert back == snap
        restored = cls.from_snapshot(back)
        assert restored.snapshot() == snap
        assert restored.drift_detected == det.drift_detected
        assert restored.warning_detected == det.warning_detected
        tail = [cut + i for i in _random_batches(restored, x[cut:], rng)]
        assert head + tail == full, cut


def test_ddm_snapshot_during_warm_up_has_no_minimum() -> None:
    det = DDM()
    det.update_many(np.zeros(10))
    snap = det.snapshot()
    assert snap["p_min"] is None
    assert snap["s_min"] is None
    det.update_many(np.zeros(30))
    assert det.snapshot()["p_min"] == 0.0


def _valid_snapshot(cls: type[Detector]) -> dict[str, Any]:
    det = cls()
    det.update_many(_errors(3)[:5000])
    snap = det.snapshot()
    return dict(orjson.loads(orjson.dumps(snap)))


def _invalid_snapshots(cls: type[Detector]) -> list[tuple[str, Any]]:
    good = _valid_snapshot(cls)
    out: list[tuple[str, Any]] = [
        ("not a mapping", [good]),
        ("none", None),
        ("extra field", {**good, "extra": 1}),
        ("extra param", {**good, "params": {**good["params"], "extra": 1}}),
    ]
    for v in (0, 2, "1", None, True, 1.0):
        out.append((f"version {v!r}", {**good, "v": v}))
    for key in good:
        out.append((f"missing {key}", {k: v for k, v in good.items() if k != key}))
    for key in good["params"]:
        params = {k: v for k, v in good["params"].items() if k != key}
        out.append((f"missing param {key}", {**good, "params": params}))
        out.append((f"string param {key}", {**good, "params": {**good["params"], key: "x"}}))
    for key, value in good.items():
        if key in ("v", "params"):
            continue
        out.append((f"string {key}", {**good, key: "1"}))
        out.append((f"list {key}", {**good, key: [value]}))
        if isinstance(value, bool):
            out.append((f"int for bool {key}", {**good, key: 1}))
        elif isinstance(value, int):
            out.append((f"bool for int {key}", {**good, key: True}))
            out.append((f"float for int {key}", {**good, key: float(value)}))
            out.append((f"negative {key}", {**good, key: -1}))
        elif isinstance(value, float):
            out.append((f"inf {key}", {**good, key: math.inf}))
            out.append((f"nan {key}", {**good, key: math.nan}))
    if cls is DDM:
        out.append(("half minimum", {**good, "p_min": None}))
        out.append(("null mean", {**good, "mean": None}))
    else:
        out.append(("alpha below beta", {**good, "params": {**good["params"], "alpha": 0.5}}))
        out.append(("n_errors above n", {**good, "n_errors": good["n"] + 1}))
        out.append(("last error after n", {**good, "last_error": good["n"] + 1}))
        out.append(("null p2s_max", {**good, "p2s_max": None}))
    return out


@pytest.mark.parametrize("cls", [DDM, EDDM])
def test_from_snapshot_accepts_its_own_snapshot(cls: type[Detector]) -> None:
    good = _valid_snapshot(cls)
    assert cls.from_snapshot(good).snapshot() == good


INVALID = [(cls, label, bad) for cls in (DDM, EDDM) for label, bad in _invalid_snapshots(cls)]


@pytest.mark.parametrize(
    ("cls", "label", "bad"), INVALID, ids=[f"{c.__name__}-{label}" for c, label, _ in INVALID]
)
def test_from_snapshot_refuses_invalid_input(cls: type[Detector], label: str, bad: Any) -> None:
    with pytest.raises(ValueError):
        cls.from_snapshot(bad)
