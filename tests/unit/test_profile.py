"""Reference profiles: builder, readers, JSON round trip and the ``profile`` command."""

from __future__ import annotations

import csv
import gzip
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_monitor.cli import main
from stream_monitor.errors import ConfigError
from stream_monitor.reference import (
    CategoricalProfile,
    NumericProfile,
    Profile,
    ProfileBuilder,
    build_profile,
    infer_format,
    load_profile,
    profile_file,
    read_rows,
)
from stream_monitor.stats.pit import PIT_POINTS

N = 3000
OPTS: dict[str, Any] = {
    "model_id": "fraud",
    "model_version": "v3",
    "score_column": "score",
    "label_column": "label",
    "exclude": ["target"],
}
CITIES = [f"city{k:02d}" for k in range(30)]


def _rows() -> list[dict[str, Any]]:
    """Synthetic training rows with Python values (None = missing)."""
    rng = np.random.default_rng(42)
    normal = rng.normal(50.0, 10.0, N)
    amount = rng.lognormal(3.0, 1.0, N)
    count = rng.integers(0, 100, N)
    count[rng.random(N) < 0.05] = -999
    zipf = 1.0 / np.arange(1, 31)
    city = rng.choice(30, size=N, p=zipf / zipf.sum())
    vip = rng.random(N) < 0.2
    stray = rng.normal(0.0, 1.0, N)
    score = rng.random(N)
    rows = []
    for i in range(N):
        rows.append(
            {
                "normal": None if i % 31 == 0 else float(normal[i]),  # row 0 missing
                "amount": None if i % 17 == 3 else float(amount[i]),
                "count": None if i % 43 == 5 else int(count[i]),
                "city": None if i % 29 == 7 else CITIES[city[i]],
                "vip": None if i % 53 == 2 else bool(vip[i]),
                "stray": ("oops" if i % 2 else "n/a") if i % 250 == 11 else float(stray[i]),
                "score": float(score[i]),
                "label": int(score[i] > 0.7),
                "target": int(rng.random() < 0.1),
            }
        )
    return rows


ROWS = _rows()
_MISSING_CELLS = ["", "NA", "null", "NaN", "None"]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({k: _MISSING_CELLS[i % 5] if v is None else v for k, v in r.items()})


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def _strip(p: Profile) -> dict[str, Any]:
    d = p.model_dump()
    del d["created_at"], d["source"]
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("train")
    out = {"csv": d / "train.csv", "jsonl": d / "train.jsonl", "parquet": d / "train.parquet"}
    _write_csv(out["csv"], ROWS)
    _write_jsonl(out["jsonl"], ROWS)
    no_stray = [{k: v for k, v in r.items() if k != "stray"} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(no_stray), out["parquet"], row_group_size=700)
    return out


@pytest.fixture(scope="module")
def prof(files: dict[str, Path]) -> Profile:
    return profile_file(files["jsonl"], **OPTS)


# ------------------------------------------------------------------------- formats agree
def test_csv_jsonl_parquet_give_equal_profiles(files: dict[str, Path], prof: Profile) -> None:
    p_csv = profile_file(files["csv"], **OPTS)
    assert p_csv.source == "train.csv" and prof.source == "train.jsonl"
    assert _strip(p_csv) == _strip(prof)
    # Parquet cannot hold the column mixing numbers and strings: compare without it.
    opts = {**OPTS, "exclude": ["target", "stray"]}
    p_pq = profile_file(files["parquet"], **opts)
    assert _strip(p_pq) == _strip(profile_file(files["jsonl"], **opts))
    assert "stray" not in p_pq.features


def test_gzip_csv(files: dict[str, Path], tmp_path: Path) -> None:
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(gzip.compress(files["csv"].read_bytes()))
    assert infer_format(gz) == "csv"
    p = profile_file(gz, **OPTS)
    assert p.source == "train.csv.gz"
    assert p.features["count"] == profile_file(files["csv"], **OPTS).features["count"]


def test_feature_set_and_types(prof: Profile) -> None:
    types = {k: f.type for k, f in prof.features.items()}
    assert types == {
        "normal": "numeric",
        "amount": "numeric",
        "count": "numeric",
        "city": "categorical",
        "vip": "categorical",
        "stray": "numeric",
        "prediction.score": "numeric",
        "prediction.label": "categorical",
    }
    assert (prof.model_id, prof.model_version, prof.n_rows) == ("fraud", "v3", N)
    assert (prof.n_bins, prof.top_k) == (10, 20)


# ------------------------------------------------------------- against independent values
def _brute_bins(values: list[float], edges: list[float]) -> list[int]:
    """Bins (-inf, e0], (e0, e1], ..., (e_last, inf), as documented by ``bin_counts``."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        for i, e in enumerate(edges):
            if v <= e:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return counts


@pytest.mark.parametrize(
    ("column", "name"),
    [
        ("normal", "normal"),
        ("amount", "amount"),
        ("count", "count"),
        ("stray", "stray"),
        ("score", "prediction.score"),
    ],
)
def test_numeric_matches_numpy(prof: Profile, column: str, name: str) -> None:
    f = prof.features[name]
    assert isinstance(f, NumericProfile)
    col = [r[column] for r in ROWS]
    present = [float(v) for v in col if isinstance(v, int | float)]
    x = np.asarray(present)
    assert f.n == N
    assert f.missing == sum(v is None for v in col)
    assert f.type_errors == sum(isinstance(v, str) for v in col)
    assert f.sample_size == len(present)
    assert f.min == x.min() and f.max == x.max()
    assert f.mean == pytest.approx(x.mean(), rel=1e-12)
    assert f.std == pytest.approx(x.std(), rel=1e-12)
    expected_edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)[1:-1]))
    np.testing.assert_allclose(f.edges, expected_edges, rtol=0, atol=0)
    assert f.counts == _brute_bins(present, f.edges)
    assert len(f.quantiles) == PIT_POINTS
    np.testing.assert_array_equal(f.quantiles, np.quantile(x, np.linspace(0, 1, PIT_POINTS)))


def test_frequent_values_find_the_sentinel(prof: Profile) -> None:
    f = prof.features["count"]
    assert isinstance(f, NumericProfile)
    n_sentinel = sum(r["count"] == -999 for r in ROWS)
    assert n_sentinel > 100
    assert f.frequent_values[0] == (-999.0, n_sentinel)
    assert len(f.frequent_values) <= 8
    present = [r["count"] for r in ROWS if r["count"] is not None]
    truth = Counter(present)
    for v, c in f.frequent_values:
        assert truth[int(v)] == c and c >= 0.01 * len(present)
    assert [c for _, c in f.frequent_values] == sorted(
        (c for _, c in f.frequent_values), reverse=True
    )
    cont = prof.features["normal"]
    assert isinstance(cont, NumericProfile) and cont.frequent_values == []


@pytest.mark.parametrize(
    ("column", "name", "convert"),
    [
        ("city", "city", str),
        ("vip", "vip", lambda v: "true" if v else "false"),
        ("label", "prediction.label", str),
    ],
)
def test_categorical_matches_counter(prof: Profile, column: str, name: str, convert: Any) -> None:
    f = prof.features[name]
    assert isinstance(f, CategoricalProfile)
    col = [r[column] for r in ROWS]
    truth = Counter(convert(v) for v in col if v is not None)
    top = sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert f.categories == [c for c, _ in top]
    assert f.counts == [n for _, n in top] + [sum(truth.values()) - sum(n for _, n in top)]
    assert f.known == sorted(truth)
    assert f.known_complete is True
    assert f.singletons == sum(1 for n in truth.values() if n == 1)
    assert f.n == N and f.missing == col.count(None) and f.type_errors == 0


def test_categorical_overflow_beyond_max_known() -> None:
    rows = [{"c": f"v{i % 25}"} for i in range(100)] + [{"c": f"u{i}"} for i in range(7)]
    p = build_profile(rows, model_id="m", max_known=10, top_k=3)
    f = p.features["c"]
    assert isinstance(f, CategoricalProfile)
    first10 = [f"v{i}" for i in range(10)]  # first distinct values, in order of appearance
    assert f.known == sorted(first10) and f.known_complete is False
    assert f.categories == ["v0", "v1", "v2"] and f.counts == [4, 4, 4, 107 - 12]
    assert f.singletons == 0
    full = build_profile(rows, model_id="m", top_k=3).features["c"]
    assert isinstance(full, CategoricalProfile)
    assert full.known_complete is True and len(full.known) == 32 and full.singletons == 7


def test_type_errors_and_missing_rules() -> None:
    rows: list[dict[str, Any]] = [
        {"x": None, "c": None},
        {"x": float("nan"), "c": "a"},
        {"x": 2, "c": 3},
        {"x": "bad", "c": True},
        {"x": True, "c": float("inf")},
        {"x": float("-inf"), "c": 1.5},
        {"x": 4.0},
    ]
    p = build_profile(rows, model_id="m")
    x, c = p.features["x"], p.features["c"]
    assert isinstance(x, NumericProfile) and isinstance(c, CategoricalProfile)
    assert (x.n, x.missing, x.type_errors, x.sample_size) == (7, 3, 2, 2)
    assert (x.min, x.max, x.mean, x.std) == (2.0, 4.0, 3.0, 1.0)
    assert (c.n, c.missing, c.type_errors) == (7, 3, 2)
    assert c.known == ["a", "true"]


def test_columns_appearing_late_and_all_missing() -> None:
    rows = [{"a": 1.0, "e": None}] * 5 + [{"a": 2.0, "late": "x", "e": None}] * 3
    p = build_profile(rows, model_id="m")
    late, e = p.features["late"], p.features["e"]
    assert isinstance(late, CategoricalProfile) and (late.n, late.missing) == (8, 5)
    assert isinstance(e, NumericProfile)
    assert (e.n, e.missing, e.sample_size, e.quantiles, e.counts) == (8, 8, 0, [], [0])
    assert e.mean is None and e.std is None


def test_csv_text_cells(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("zip,code,flag,x\n01234,7,True,1e3\n75001,x9,FALSE,NA\n,8,false,inf\n")
    p = profile_file(path, model_id="m", categorical=["zip"])
    z, code, flag, x = (p.features[k] for k in ("zip", "code", "flag", "x"))
    assert isinstance(z, CategoricalProfile) and z.known == ["01234", "75001"] and z.missing == 1
    assert isinstance(code, NumericProfile) and code.type_errors == 1 and code.sample_size == 2
    assert isinstance(flag, CategoricalProfile) and flag.counts == [2, 1, 0]
    assert flag.categories == ["false", "true"]
    assert isinstance(x, NumericProfile) and (x.missing, x.mean) == (2, 1000.0)
    # Without the override a numeric-looking cell in a string column is a type error.
    path.write_text("c\na\n12\nb\n")
    c = profile_file(path, model_id="m").features["c"]
    assert isinstance(c, CategoricalProfile) and (c.type_errors, c.known) == (1, ["a", "b"])


def test_features_and_exclude_select_columns(files: dict[str, Path]) -> None:
    p = profile_file(files["jsonl"], model_id="m", features=["normal", "city"])
    assert set(p.features) == {"normal", "city"}
    p = profile_file(files["jsonl"], model_id="m", exclude=["stray", "target"], max_features=3)
    assert list(p.features) == ["normal", "amount", "count"]


# ---------------------------------------------------------------------------- sampling
def test_reservoir_uniform_and_bounded() -> None:
    n, k = 60_000, 5_000
    rng = np.random.default_rng(7)
    x = rng.normal(size=n)
    b = ProfileBuilder(model_id="m", sample_size=k, row_sample=100, seed=3)
    for start in range(0, n, 4_000):
        b.update({"x": float(x[i]), "idx": i} for i in range(start, start + 4_000))
        for col in b._columns.values():
            assert col.acc is not None
            sample = col.acc.sample  # type: ignore[union-attr]
            assert sample.buf.size <= k and sample.size <= k
        assert len(b._rows) <= 100
    p = b.build()
    fx, fi = p.features["x"], p.features["idx"]
    assert isinstance(fx, NumericProfile) and isinstance(fi, NumericProfile)
    assert fx.sample_size == k and sum(fx.counts) == k and fx.n == n
    assert fx.mean == pytest.approx(x.mean(), rel=1e-12)  # moments stay exact
    # Edges sit at the true quantiles: ECDF of the full data at each edge is within tolerance.
    ecdf = np.searchsorted(np.sort(x), fx.edges, side="right") / n
    np.testing.assert_allclose(ecdf, np.linspace(0.1, 0.9, 9), atol=0.02)
    # No bias towards early or late rows: the sampled row indices fill 10 blocks evenly.
    counts = fi.counts
    assert len(counts) == 10
    assert all(abs(c - k / 10) < 5 * math.sqrt(k / 10) for c in counts)
    # Same seed, same profile; another seed, another sample.
    rows = [{"x": float(v)} for v in x[:20_000]]
    a1 = build_profile(rows, model_id="m", sample_size=1000, seed=1)
    a2 = build_profile(rows, model_id="m", sample_size=1000, seed=1)
    a3 = build_profile(rows, model_id="m", sample_size=1000, seed=2)
    assert a1.features == a2.features and a1.features != a3.features


def test_row_sample(prof: Profile) -> None:
    assert prof.sample_columns == ["normal", "amount", "count", "stray"]
    assert len(prof.sample_rows) == 512
    truth = {
        tuple(
            None if not isinstance(r[c], int | float) else float(r[c]) for c in prof.sample_columns
        )
        for r in ROWS
    }
    assert all(tuple(r) in truth for r in prof.sample_rows)
    assert len({tuple(r) for r in prof.sample_rows}) == 512
    small = build_profile([{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}], model_id="m")
    assert small.sample_columns == ["a"] and small.sample_rows == [[1.0], [None]]


# --------------------------------------------------------------------- prediction events
def test_recorded_prediction_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = [
        {
            "event_id": f"e{i}",
            "model_id": "m",
            "timestamp": 1_700_000_000 + i,
            "features": {"age": 20 + i % 50, "country": ["fr", "de"][i % 2]},
            "prediction": {"label": i % 3 == 0, "score": i / 100},
        }
        for i in range(100)
    ]
    events.append({"event_id": "bad", "model_id": "m", "timestamp": "x", "features": {}})
    path = tmp_path / "events.jsonl"
    _write_jsonl(path, events)
    with caplog.at_level(logging.WARNING, logger="stream_monitor.reference.profile"):
        p = profile_file(path, model_id="m")
    assert "invalid prediction event" in caplog.text
    assert p.n_rows == 100
    assert set(p.features) == {"age", "country", "prediction.score", "prediction.label"}
    lab = p.features["prediction.label"]
    assert isinstance(lab, CategoricalProfile)
    assert lab.categories == ["false", "true"] and lab.counts == [66, 34, 0]
    score = p.features["prediction.score"]
    assert isinstance(score, NumericProfile) and score.mean == pytest.approx(0.495)


# ------------------------------------------------------------------------------- errors
def test_builder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no rows"):
        build_profile([], model_id="m", source="empty.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.csv: no rows"):
        profile_file(empty, model_id="m")
    with pytest.raises(ConfigError, match=r"score column 'scor' not found.*columns: a"):
        build_profile([{"a": 1}], model_id="m", score_column="scor")
    with pytest.raises(ConfigError, match="label column 'y'"):
        build_profile([{"a": 1}], model_id="m", label_column="y")


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_rows(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_rows(tmp_path / "data.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:3: invalid JSON"):
        list(read_rows(bad))
    bad.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: expected a JSON object"):
        list(read_rows(bad))
    notpq = tmp_path / "x.parquet"
    notpq.write_text("hello")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        list(read_rows(notpq))


# ------------------------------------------------------------------------ persistence
def test_round_trip(prof: Profile, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    prof.write(path)
    assert load_profile(path) == prof
    assert Profile.from_bytes(path.read_bytes()) == prof
    doc = orjson.loads(path.read_bytes())
    assert doc["format"] == "stream-monitor-profile" and doc["version"] == 1
    assert doc["features"]["count"]["frequent_values"][0][0] == -999.0


def _doc(prof: Profile) -> dict[str, Any]:
    return orjson.loads(prof.to_bytes())


def _bad_docs(prof: Profile) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []

    def edit(pattern: str, change: Any) -> None:
        d = _doc(prof)
        change(d)
        out.append((d, pattern))

    edit("format is 'other'", lambda d: d.update(format="other"))
    edit("unsupported profile version 2", lambda d: d.update(version=2))
    edit("features.normal.numeric.n", lambda d: d["features"]["normal"].update(n="many"))
    edit(
        "counts has 9 entries for 9 edges (expected 10)",
        lambda d: d["features"]["normal"]["counts"].pop(),
    )
    edit(
        "counts has 21 entries for 19 categories",
        lambda d: d["features"]["city"]["categories"].pop(),
    )
    edit("strictly increasing", lambda d: d["features"]["normal"]["edges"].reverse())
    edit("Extra inputs", lambda d: d.update(surprise=1))
    edit("model_id", lambda d: d.pop("model_id"))
    edit("sample row 0 has 3 values", lambda d: d["sample_rows"][0].pop())
    edit("features.city", lambda d: d["features"]["city"].update(type="weird"))
    out.append(([1, 2], "expected a JSON object"))
    return out


def test_load_profile_errors(prof: Profile, tmp_path: Path) -> None:
    path = tmp_path / "broken.profile.json"
    with pytest.raises(ConfigError, match=r"broken\.profile\.json: profile file not found"):
        load_profile(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.profile\.json: not valid JSON"):
        load_profile(path)
    for doc, pattern in _bad_docs(prof):
        path.write_bytes(orjson.dumps(doc))
        with pytest.raises(ConfigError) as exc:
            load_profile(path)
        msg = str(exc.value)
        assert str(path) in msg and pattern in msg, (pattern, msg)
        assert "\n" not in msg
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path)  # a directory


# ---------------------------------------------------------------------------------- CLI
def test_cli_profile(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["profile", str(files["csv"]), "--model-id", "fraud", "--model-version", "v3"]
    argv += ["--score-column", "score", "--label-column", "label", "--exclude", "target"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    written = tmp_path / "fraud-v3.profile.json"
    assert written.is_file() and f"wrote {written.name}" in out
    assert _strip(load_profile(written)) == _strip(profile_file(files["csv"], **OPTS))
    lines = out.splitlines()
    assert len(lines) == 9  # 8 features and the path
    assert lines[0].split()[:3] == ["normal", "numeric", f"n={N}"] and "bins=10" in lines[0]
    assert "categories=20+other distinct=30" in next(x for x in lines if x.startswith("city"))

    other = tmp_path / "sub" / "p.json"
    other.parent.mkdir()
    argv = ["profile", str(files["parquet"]), "--model-id", "m", "-o", str(other)]
    assert main([*argv, "--features", "normal,city", "--n-bins", "4"]) == 0
    p = load_profile(other)
    assert set(p.features) == {"normal", "city"} and len(p.features["normal"].counts) == 4


def test_cli_profile_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(tmp_path / "missing.csv"), "--model-id", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stream-monitor profile: error:") and "missing.csv" in err
    assert "\n" not in err
    src = tmp_path / "t.csv"
    src.write_text("a\n1\n")
    assert main(["profile", str(src), "--model-id", "m", "--score-column", "s"]) == 2
    assert "score column 's' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(src), "--model-id", "m", "--n-bins", "0"])
    assert exc.value.code == 2
