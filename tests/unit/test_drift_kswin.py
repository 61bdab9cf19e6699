"""Our KSWIN against river's ``drift.KSWIN``, the reference, on seeded streams."""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import random
from typing import Any

import numpy as np
import orjson
import pytest
from river import drift
from scipy import stats

from stream_monitor.stats.drift.kswin import KSWIN, _ks_count

DEFAULTS: dict[str, Any] = {"alpha": 0.005, "window_size": 100, "stat_size": 30}
WIDE: dict[str, Any] = {"alpha": 0.0001, "window_size": 200, "stat_size": 50}
NARROW: dict[str, Any] = {"alpha": 0.01, "window_size": 60, "stat_size": 20}
LOOSE: dict[str, Any] = {"alpha": 0.05, "window_size": 300, "stat_size": 100}

#: (detector parameters, stream seed, stream length): the defaults (with a seed: river's default
#: ``seed=None`` is not reproducible) and three other settings, several seeds each.
CASES: list[tuple[dict[str, Any], int, int]] = [
    ({**DEFAULTS, "seed": 0}, 0, 20_000),
    ({**DEFAULTS, "seed": 1}, 1, 12_000),
    ({**DEFAULTS, "seed": 2}, 2, 12_000),
    ({**WIDE, "seed": 3}, 3, 12_000),
    ({**WIDE, "seed": 4}, 4, 12_000),
    ({**NARROW, "seed": 7}, 5, 12_000),
    ({**NARROW, "seed": 8}, 6, 12_000),
    ({**LOOSE, "seed": 9}, 7, 12_000),
]


def _stream(seed: int, n: int) -> tuple[np.ndarray, list[int]]:
    """``n`` normal values in segments of different mean and spread (3 change points below
    15,000 values, 4 above); returns the values and the change points."""
    rng = np.random.default_rng(seed)
    k = 5 if n > 15_000 else 4
    cuts = np.sort(rng.choice(np.arange(1, n // 1000), size=k - 1, replace=False)) * 1000
    bounds = [0, *cuts.tolist(), n]
    means = [0.0, 1.5, -0.5, 1.0, 2.5]
    sds = [1.0, 0.7, 1.5, 1.0, 2.0]
    parts = [
        rng.normal(means[i], sds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)
    ]
    return np.concatenate(parts), cuts.tolist()


@functools.cache
def _case_stream(seed: int, n: int) -> tuple[np.ndarray, list[int]]:
    return _stream(seed, n)


def _river_firings(x: np.ndarray, **params: Any) -> list[int]:
    det = drift.KSWIN(**params)
    fired = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            fired.append(i)
    return fired


@functools.cache
def _river_case(case: int) -> list[int]:
    params, seed, n = CASES[case]
    return _river_firings(_case_stream(seed, n)[0], **params)


def _random_batches(det: KSWIN, x: np.ndarray, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    fired: list[int] = []
    lo = 0
    while lo < len(x):
        hi = lo + int(rng.integers(1, 3001))
        fired += [lo + i for i in det.update_many(x[lo:hi])]
        lo = hi
    return fired


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fires_where_river_fires(case: int) -> None:
    params, seed, n = CASES[case]
    x, cuts = _case_stream(seed, n)
    expected = _river_case(case)
    assert len(expected) >= 3, "the seeded stream must make river's KSWIN fire several times"
    for cut in cuts:
        # Every change is seen soon after it happens, unless a firing came just before it: then
        # the change sits in the older part of the refilled window.
        just_before = any(cut - params["window_size"] <= i < cut for i in expected)
        assert just_before or any(cut <= i < cut + 400 for i in expected), (cut, expected)
    assert KSWIN(**params).update_many(x) == expected
    for batch_seed in range(3):
        assert _random_batches(KSWIN(**params), x, batch_seed) == expected, batch_seed


@pytest.mark.parametrize("params", [{**DEFAULTS, "seed": 21}, {**NARROW, "seed": 22}])
def test_stationary_stream_fires_where_river_fires(params: dict[str, Any]) -> None:
    x = np.random.default_rng(99).normal(0.0, 1.0, 12_000)
    expected = _river_firings(x, **params)
    assert KSWIN(**params).update_many(x) == expected
    assert _random_batches(KSWIN(**params), x, 5) == expected


def test_value_by_value_matches_river() -> None:
    x, _ = _case_stream(5, 12_000)
    det = KSWIN(**CASES[5][0])
    fired = [i for i, v in enumerate(x[:4000]) if det.update_many(np.array([v]))]
    assert fired == [i for i in _river_case(5) if i < 4000]


def test_unseeded_matches_river_where_the_draw_does_not_matter() -> None:
    # Constant segments: every test compares old level against new level only, so the firing
    # positions do not depend on which older values are drawn.
    levels = [0.0, 5.0, 2.0, 7.0, -1.0]
    x = np.repeat(levels, 500)
    settings: list[dict[str, Any]] = [{}, NARROW]
    for params in settings:
        expected = _river_firings(x, **params)
        assert len(expected) == len(levels) - 1
        assert KSWIN(**params).update_many(x) == expected
        assert _random_batches(KSWIN(**params), x, 1) == expected


def test_defaults_and_params_match_river() -> None:
    ours = inspect.signature(KSWIN).parameters
    theirs = inspect.signature(drift.KSWIN).parameters
    assert list(ours) == list(theirs) == list(KSWIN.PARAMS)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in theirs.items()}
    assert KSWIN().params == {**DEFAULTS, "seed": None, "window": None}


@pytest.mark.parametrize("size", [0, 40, 100, 250])
def test_initial_window_matches_river(size: int) -> None:
    rng = np.random.default_rng(size)
    initial = rng.normal(0.0, 1.0, size).tolist()
    x = np.concatenate([rng.normal(1.5, 1.0, 1500), rng.normal(0.0, 1.0, 1500)])
    expected = _river_firings(x, seed=5, window=initial)
    if size:  # the initial window makes the first change visible
        assert expected and expected[0] < 150
    det = KSWIN(seed=5, window=initial)
    assert det.window == (tuple(initial[-100:]) if size else ())
    assert det.update_many(x) == expected
    assert _random_batches(KSWIN(seed=5, window=initial), x, 2) == expected


def test_large_stat_size_matches_river() -> None:
    # Above 10,000 values per sample scipy takes its asymptotic route: every test calls scipy.
    rng = np.random.default_rng(3)
    params: dict[str, Any] = {"window_size": 20_002, "stat_size": 10_001, "seed": 4}
    shifted = rng.normal(0.0, 1.0, 20_006)
    shifted[18_000:] += 3.0
    steady = rng.normal(0.0, 1.0, 20_006)
    for x in (shifted, steady):
        expected = _river_firings(x, **params)
        assert KSWIN(**params).update_many(x) == expected
    assert expected == []
    assert _river_firings(shifted, **params) == [20_001]


# scipy warns when its exact p-value comes out of [0, 1] and falls back to the asymptotic one
# (still with the rounded distance, so still a function of the count).
@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")
@pytest.mark.parametrize("n", [1, 2, 5, 20, 30, 37, 100])
def test_scipy_verdict_depends_on_the_ks_count_only(n: int) -> None:
    # The premise of the verdict memo: for equal sample sizes scipy's statistic is k / n for
    # the count we compute, and its p-value is the same for every pair with the same count.
    rng = np.random.default_rng(n)
    seen: dict[int, tuple[float, float]] = {}
    for trial in range(400):
        if trial % 3 == 0:  # many ties, within and across the samples
            a = rng.integers(0, 6, n).tolist()
            b = (rng.integers(0, 6, n) + rng.integers(0, 2)).tolist()
        else:
            a = rng.normal(0.0, 1.0, n).tolist()
            b = rng.normal(rng.uniform(0.0, 2.0), 1.0, n).tolist()
        if trial % 50 == 0:
            b = list(a)
        a, b = [float(v) for v in a], [float(v) for v in b]
        res = stats.ks_2samp(a, b, method="auto")
        k = _ks_count(sorted(a), sorted(b))
        assert k == round(res.statistic * n)
        got = (float(res.statistic), float(res.pvalue))
        assert seen.setdefault(k, got) == got
    assert len(seen) >= 2


def _restored_firings(params: dict[str, Any], x: np.ndarray, cuts: list[int]) -> list[int]:
    """Feed ``x``, snapshotting through JSON and restoring at every cut."""
    det = KSWIN(**params)
    fired: list[int] = []
    bounds = [0, *cuts, len(x)]
    for lo, hi in itertools.pairwise(bounds):
        fired += [lo + i for i in det.update_many(x[lo:hi])]
        snap = det.snapshot()
        loaded = orjson.loads(orjson.dumps(snap))
        assert loaded == snap
        det = KSWIN.from_snapshot(loaded)
        assert det.snapshot() == snap
    return fired


@pytest.mark.parametrize("case", [0, 3, 5])
def test_snapshot_round_trip_continues_exactly(case: int) -> None:
    params, seed, n = CASES[case]
    x, _ = _case_stream(seed, n)
    expected = _river_case(case)
    rng = np.random.default_rng(case)
    cuts = set(rng.integers(1, len(x), 8).tolist())
    cuts |= {params["window_size"] - 5, expected[0] + 1, expected[1] + 1, len(x) - 1}
    assert _restored_firings(params, x, sorted(cuts)) == expected


def test_snapshot_at_a_firing_starts_afresh_after_restore() -> None:
    params, seed, n = CASES[5]
    x, _ = _case_stream(seed, n)
    expected = _river_case(5)
    det = KSWIN(**params)
    det.update_many(x[: expected[0] + 1])
    snap = det.snapshot()
    assert snap["drift_detected"] is True
    assert len(snap["values"]) == params["stat_size"]
    rest = KSWIN.from_snapshot(orjson.loads(orjson.dumps(snap))).update_many(x[expected[0] + 1 :])
    assert [expected[0] + 1 + i for i in rest] == expected[1:]


def test_snapshot_with_initial_window_and_without_seed() -> None:
    rng = np.random.default_rng(8)
    initial = rng.normal(0.0, 1.0, 60).tolist()
    x = rng.normal(0.0, 1.0, 6000)
    det = KSWIN(alpha=0.2, window=initial)  # fires every few tests, at draw-dependent positions
    det.update_many(x[:500])
    cut = 500
    while det.drift_detected:  # a snapshot at a firing would restart from a fresh random seed
        det.update_many(x[cut : cut + 1])
        cut += 1
    snap = orjson.loads(orjson.dumps(det.snapshot()))
    assert snap["params"]["window"] == initial
    assert snap["params"]["seed"] is None
    twin = KSWIN.from_snapshot(snap)
    assert twin.window == det.window
    assert twin.snapshot() == snap
    # Same generator state, so the same draws up to the next firing (each start after a firing
    # draws a fresh random seed).
    first, second = det.update_many(x[cut:]), twin.update_many(x[cut:])
    assert first and second and first[0] == second[0]
    params = {"seed": 13, "window": initial}
    assert _restored_firings(params, x, [10, 50, 3000]) == _river_firings(x, **params)


def _base_snapshot() -> dict[str, Any]:
    det = KSWIN(seed=3)
    det.update_many(np.random.default_rng(0).normal(0.0, 1.0, 250))
    snap = det.snapshot()
    KSWIN.from_snapshot(snap)  # valid as it is
    return snap


def _edited(path: tuple[str, ...], value: Any = ..., *, drop: bool = False) -> dict[str, Any]:
    snap = copy.deepcopy(_base_snapshot())
    node = snap
    for key in path[:-1]:
        node = node[key]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return snap


@pytest.mark.parametrize("version", [0, 2, "1", None, 1.0, True])
def test_from_snapshot_refuses_a_wrong_version(version: Any) -> None:
    with pytest.raises(ValueError, match="version"):
        KSWIN.from_snapshot(_edited(("v",), version))


@pytest.mark.parametrize(
    "path",
    [
        ("v",),
        ("params",),
        ("drift_detected",),
        ("values",),
        ("rng",),
        ("params", "alpha"),
        ("params", "window_size"),
        ("params", "stat_size"),
        ("params", "seed"),
        ("params", "window"),
        ("rng", "version"),
        ("rng", "state"),
        ("rng", "gauss_next"),
    ],
)
def test_from_snapshot_refuses_a_missing_field(path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        KSWIN.from_snapshot(_edited(path, drop=True))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("params", "alpha"), "0.005"),
        (("params", "window_size"), "100"),
        (("params", "window_size"), 100.0),
        (("params", "stat_size"), None),
        (("params", "seed"), "3"),
        (("params", "seed"), 3.5),
        (("params", "window"), "abc"),
        (("params", "window"), ["1.0"]),
        (("params",), [0.005, 100, 30, 3, None]),
        (("drift_detected",), 1),
        (("drift_detected",), "false"),
        (("values",), "1,2,3"),
        (("values",), [1.0, "2.0"]),
        (("values",), [1.0, None]),
        (("values",), [1.0, float("nan")]),
        (("values",), [1.0, float("inf")]),
        (("rng",), [3, [0] * 625, None]),
        (("rng", "version"), "3"),
        (("rng", "state"), ["1"] * 625),
        (("rng", "state"), [1.5] * 625),
        (("rng", "gauss_next"), "0.5"),
        (("extra",), 1),
        (("params", "extra"), 1),
        (("rng", "extra"), 1),
    ],
)
def test_from_snapshot_refuses_a_wrong_type(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ValueError):
        KSWIN.from_snapshot(_edited(path, value))


def _state_with(index: int, value: int) -> list[int]:
    state = list(_base_snapshot()["rng"]["state"])
    state[index] = value
    return state


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("rng", "state"), [0] * 624),
        (("rng", "state"), [0] * 626),
        (("rng", "state"), []),
        (("rng", "state"), _state_with(0, 2**32)),
        (("rng", "state"), _state_with(5, -1)),
        (("rng", "state"), _state_with(624, 625)),
        (("rng", "version"), 2),
        (("values",), [0.0] * 101),
        (("params", "window"), [0.0, float("inf")]),
        (("params", "stat_size"), 0),
        (("params", "stat_size"), 51),
        (("params", "alpha"), 1.5),
    ],
)
def test_from_snapshot_refuses_a_wrong_shape_or_range(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ValueError):
        KSWIN.from_snapshot(_edited(path, value))


def test_from_snapshot_refuses_a_non_mapping() -> None:
    with pytest.raises(ValueError):
        KSWIN.from_snapshot([1, 2, 3])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [
        {"alpha": -0.1},
        {"alpha": 1.5},
        {"alpha": float("nan")},
        {"stat_size": 0},
        {"window_size": 59, "stat_size": 30},
        {"window_size": 100.0},
        {"seed": True},
        {"seed": 2**64},
        {"seed": "7"},
        {"window": [0.0, float("nan")]},
    ],
)
def test_constructor_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        KSWIN(**params)


def test_update_many_refuses_non_finite_values_and_feeds_nothing() -> None:
    det = KSWIN(seed=1)
    det.update_many(np.arange(50.0))
    before = det.snapshot()
    for bad in (np.array([1.0, np.nan]), np.array([np.inf]), np.array([2.0, -np.inf, 3.0])):
        with pytest.raises(ValueError, match="finite"):
            det.update_many(bad)
    assert det.snapshot() == before


def test_snapshot_is_plain_data() -> None:
    snap = _base_snapshot()
    assert set(snap) == {"v", "params", "drift_detected", "values", "rng"}
    assert len(snap["values"]) == 100
    assert all(type(v) is float for v in snap["values"])
    assert len(snap["rng"]["state"]) == 625
    assert all(type(w) is int for w in snap["rng"]["state"])
    assert random.Random(3).getstate()[0] == snap["rng"]["version"]
