"""Reference profiles: a model's inputs and outputs summarised from a training set.

A :class:`Profile` is a small, versioned JSON document that the live monitor loads as its
reference instead of learning it from the first production events. It is built in one streaming
pass with bounded memory (:func:`build_profile`, :class:`ProfileBuilder`) and binned with the very
functions the live monitor uses (:func:`~stream_monitor.stats.quantile_edges`,
:func:`~stream_monitor.stats.bin_counts`, :func:`~stream_monitor.stats.top_categories` and the
``PIT_POINTS`` quantile grid), so production data is binned exactly as the profile was.

Examples
--------
>>> rows = [{"age": 30 + i % 7, "country": "fr" if i % 3 else "de", "score": i / 10}
...         for i in range(10)]
>>> p = build_profile(rows, model_id="m", score_column="score", n_bins=4)
>>> sorted(p.features)
['age', 'country', 'prediction.score']
>>> p.features["country"].categories, p.features["country"].counts
(['fr', 'de'], [6, 4, 0])
>>> Profile.from_bytes(p.to_bytes()) == p
True
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream_monitor.config import ReferenceFile
from stream_monitor.errors import ConfigError
from stream_monitor.events.outputs import PREDICTION_LABEL, PREDICTION_SCORE
from stream_monitor.events.schema import PredictionEvent, label_str
from stream_monitor.stats import bin_counts, quantile_edges, top_categories
from stream_monitor.stats.pit import PIT_POINTS

__all__ = [
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "Profile",
    "ProfileBuilder",
    "build_profile",
    "load_profile",
    "profile_file",
]

log = logging.getLogger(__name__)

PROFILE_FORMAT = "stream-monitor-profile"
PROFILE_VERSION = 1
#: Rows accumulated before a chunk is turned into column arrays.
CHUNK_ROWS = 10_000
#: Values at least this share of a numeric sample are reported in ``frequent_values``.
FREQUENT_SHARE = 0.01
MAX_FREQUENT = 8
#: Cells of text files (CSV) read as missing.
MISSING_TEXT = frozenset({"", "NA", "NaN", "nan", "null", "NULL", "None"})
_BOOL_TEXT = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}


# --------------------------------------------------------------------------------- data model
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericProfile(_Frozen):
    """Profile of a numeric column: exact moments, quantile bins and the PIT grid.

    ``edges``, ``counts``, ``quantiles`` and ``frequent_values`` come from a uniform sample of at
    most ``sample_size`` present values (all of them unless the column was larger).
    """

    type: Literal["numeric"] = "numeric"
    n: int = Field(ge=0, description="rows seen, missing included")
    missing: int = Field(ge=0, description="null, empty, NaN or infinite values")
    type_errors: int = Field(ge=0, description="non-numeric values")
    min: float | None
    max: float | None
    mean: float | None
    std: float | None = Field(description="population standard deviation (ddof=0)")
    edges: list[float]
    counts: list[Annotated[int, Field(ge=0)]]
    quantiles: list[float]
    frequent_values: list[tuple[float, int]]
    sample_size: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> NumericProfile:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(
                f"counts has {len(self.counts)} entries for {len(self.edges)} edges "
                f"(expected {len(self.edges) + 1})"
            )
        e = np.asarray(self.edges, dtype=np.float64)
        if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError("edges must be finite and strictly increasing")
        if sum(self.counts) != self.sample_size:
            raise ValueError(f"counts sum to {sum(self.counts)}, not sample_size")
        if len(self.quantiles) != (PIT_POINTS if self.sample_size else 0):
            raise ValueError(
                f"quantiles has {len(self.quantiles)} points, expected "
                f"{PIT_POINTS if self.sample_size else 0}"
            )
        if np.any(np.diff(np.asarray(self.quantiles, dtype=np.float64)) < 0):
            raise ValueError("quantiles must be sorted")
        if self.missing + self.type_errors > self.n:
            raise ValueError("missing + type_errors exceeds n")
        return self


class CategoricalProfile(_Frozen):
    """Profile of a categorical column: top categories plus "other", and the known values."""

    type: Literal["categorical"] = "categorical"
    n: int = Field(ge=0, description="rows seen, missing included")
    missing: int = Field(ge=0)
    type_errors: int = Field(ge=0, description="numbers in a string column")
    categories: list[str]
    counts: list[Annotated[int, Field(ge=0)]] = Field(description="per category, then other")
    known: list[str]
    known_complete: bool
    singletons: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalProfile:
        if len(self.counts) != len(self.categories) + 1:
            raise ValueError(
                f"counts has {len(self.counts)} entries for {len(self.categories)} categories "
                f"(expected {len(self.categories) + 1}, the last one for other)"
            )
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be distinct")
        if any(a >= b for a, b in itertools.pairwise(self.known)):
            raise ValueError("known must be sorted and distinct")
        if self.missing + self.type_errors > self.n:
            raise ValueError("missing + type_errors exceeds n")
        return self


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="type")]


class Profile(_Frozen):
    """A model's reference profile.

    Examples
    --------
    >>> p = build_profile([{"x": 1.0}, {"x": 2.0}, {"x": None}], model_id="m", n_bins=2)
    >>> x = p.features["x"]
    >>> x.n, x.missing, x.edges, x.counts, x.mean
    (3, 1, [1.5], [1, 1], 1.5)
    >>> p.sample_columns, p.sample_rows
    (['x'], [[1.0], [2.0], [None]])
    """

    format: Literal["stream-monitor-profile"] = "stream-monitor-profile"
    version: Literal[1] = 1
    model_id: str
    model_version: str | None = None
    created_at: float = Field(description="Unix seconds")
    source: str = Field(description="input file name")
    n_rows: int = Field(ge=0)
    n_bins: int = Field(ge=1)
    top_k: int = Field(ge=0)
    features: dict[str, FeatureProfile]
    sample_columns: list[str]
    sample_rows: list[list[float | None]]

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for name in self.sample_columns:
            f = self.features.get(name)
            if not isinstance(f, NumericProfile):
                raise ValueError(f"sample column {name!r} is not a numeric feature")
        width = len(self.sample_columns)
        for i, row in enumerate(self.sample_rows):
            if len(row) != width:
                raise ValueError(f"sample row {i} has {len(row)} values, expected {width}")
        return self

    def to_bytes(self) -> bytes:
        """The profile as indented JSON."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (temporary file, then rename)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, p)

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        """Parse and validate a profile; raises :class:`ConfigError` when it is not one."""
        return _parse(data, "profile")


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read a profile written by :meth:`Profile.write`.

    Raises
    ------
    ConfigError
        Naming the file and the problem: missing, unreadable, not JSON, not a profile, an
        unsupported version, or an invalid or inconsistent profile.

    Examples
    --------
    >>> import tempfile
    >>> p = build_profile([{"x": 1.0}, {"x": 2.0}], model_id="m")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p.write(f"{d}/m.profile.json")
    ...     load_profile(f"{d}/m.profile.json") == p
    True
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: profile file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profile: {exc.strerror or exc}") from exc
    return _parse(data, str(path))


def _parse(data: bytes, where: str) -> Profile:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a stream-monitor profile (expected a JSON object)")
    if doc.get("format") != PROFILE_FORMAT:
        raise ConfigError(
            f"{where}: not a stream-monitor profile (format is {doc.get('format')!r}, "
            f"expected {PROFILE_FORMAT!r})"
        )
    if doc.get("version") != PROFILE_VERSION:
        raise ConfigError(
            f"{where}: unsupported profile version {doc.get('version')!r} "
            f"(this stream-monitor reads version {PROFILE_VERSION})"
        )
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        errs = exc.errors()
        parts = [f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in errs[:3]]
        more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
        raise ConfigError(f"{where}: invalid profile: {'; '.join(parts)}{more}") from None


# ------------------------------------------------------------------------------ value parsing
def _parse_text(v: Any) -> Any:
    """A text cell as the JSON value it stands for: None, a bool, a float or the string."""
    if type(v) is not str:
        return v
    if v in MISSING_TEXT:
        return None
    b = _BOOL_TEXT.get(v)
    if b is not None:
        return b
    try:
        return float(v)
    except ValueError:
        return v


def _parse_text_categorical(v: Any) -> Any:
    """A text cell of a forced-categorical column: numbers stay strings."""
    if type(v) is not str:
        return v
    if v in MISSING_TEXT:
        return None
    b = _BOOL_TEXT.get(v)
    return v if b is None else b


def _kind(v: Any) -> str:
    """The kind of a value: numeric, categorical, missing or other (a type never monitored)."""
    t = type(v)
    if t is float:
        return "numeric" if math.isfinite(v) else "missing"
    if t is int:
        return "numeric"
    if t is str or t is bool:
        return "categorical"
    return "missing" if v is None else "other"


def _label_value(v: Any) -> Any:
    """A prediction label as the monitor sees it (see ``PredictionEvent.prediction_label``)."""
    t = type(v)
    if t is float and not math.isfinite(v):
        return None
    if t is str or t is bool or t is int or t is float:
        return label_str(v)
    return v  # None, or a type error counted by the categorical column


def _numeric_split(column: list[Any]) -> tuple[np.ndarray, int, int]:
    """Floats (NaN where no usable number is), the count of missing values (None, NaN, inf)
    and of wrongly typed ones: the live monitor's rules for a numeric column."""
    out = np.full(len(column), np.nan)
    missing = 0
    bad = 0
    for i, v in enumerate(column):
        t = type(v)
        if t is float or t is int:
            out[i] = v
        elif v is None:
            missing += 1
        else:
            bad += 1
    nonfinite = int(np.count_nonzero(~np.isfinite(out))) - missing - bad
    if nonfinite:
        out[~np.isfinite(out)] = np.nan
    return out, missing + nonfinite, bad


def _categorical_split(column: list[Any]) -> tuple[list[str], int, int]:
    """Strings (booleans as "true"/"false"), the count of missing values (None, NaN, inf) and of
    wrongly typed ones (numbers...): the live monitor's rules for a categorical column."""
    out: list[str] = []
    missing = 0
    bad = 0
    for v in column:
        t = type(v)
        if t is str:
            out.append(v)
        elif t is bool:
            out.append("true" if v else "false")
        elif v is None or (t is float and not math.isfinite(v)):
            missing += 1
        else:
            bad += 1
    return out, missing, bad


def _as_float(v: Any) -> float | None:
    t = type(v)
    if (t is float or t is int) and math.isfinite(v):
        return float(v)
    return None


# ------------------------------------------------------------------------------- accumulators
def _reservoir_plan(
    seen: int, m: int, k: int, rng: np.random.Generator
) -> tuple[int, np.ndarray, np.ndarray]:
    """Algorithm R for ``m`` new items after ``seen``, into a reservoir of size ``k``.

    Returns how many of the first items are appended (while the reservoir is not full), then the
    slots to overwrite and the indices (into the ``m`` items) of their new occupants. When
    several items hit one slot the last wins, exactly as if they had been offered one by one.
    """
    fill = min(max(k - seen, 0), m)
    rest = m - fill
    if rest == 0:
        return fill, np.empty(0, np.intp), np.empty(0, np.intp)
    pos = np.arange(seen + fill + 1, seen + m + 1)  # 1-based stream positions
    j = rng.integers(0, pos)
    hit = np.flatnonzero(j < k)
    slots_rev = j[hit][::-1]
    slots, first = np.unique(slots_rev, return_index=True)
    src = (hit[::-1][first] + fill).astype(np.intp)
    return fill, slots.astype(np.intp), src


class _Reservoir:
    """A uniform sample of at most ``capacity`` floats; the buffer grows as needed."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.buf = np.empty(0, dtype=np.float64)
        self.size = 0
        self.seen = 0

    def add(self, x: np.ndarray) -> None:
        fill, slots, src = _reservoir_plan(self.seen, x.size, self.capacity, self.rng)
        if fill:
            need = self.size + fill
            if need > self.buf.size:
                grown = np.empty(min(self.capacity, max(need, 2 * self.buf.size)))
                grown[: self.size] = self.buf[: self.size]
                self.buf = grown
            self.buf[self.size : need] = x[:fill]
            self.size = need
        if slots.size:
            self.buf[slots] = x[src]
        self.seen += x.size

    @property
    def values(self) -> np.ndarray:
        return self.buf[: self.size]


class _NumericAcc:
    """Exact counts and moments (Chan's parallel update) plus a reservoir of present values."""

    def __init__(self, sample_size: int, rng: np.random.Generator, missing: int, bad: int):
        self.n = missing + bad
        self.missing = missing
        self.type_errors = bad
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.sample = _Reservoir(sample_size, rng)

    def add(self, column: list[Any]) -> None:
        values, missing, bad = _numeric_split(column)
        self.n += len(column)
        self.missing += missing
        self.type_errors += bad
        x = values[~np.isnan(values)]
        if x.size == 0:
            return
        nb = x.size
        mb = float(x.mean())
        m2b = float(np.square(x - mb).sum())
        n = self.count + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.count * nb / n
        self.count = n
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.sample.add(x)

    def profile(self, n_bins: int) -> NumericProfile:
        s = self.sample.values
        edges = quantile_edges(s, n_bins)
        quantiles = np.quantile(s, np.linspace(0.0, 1.0, PIT_POINTS)) if s.size else []
        present = self.count > 0
        return NumericProfile(
            n=self.n,
            missing=self.missing,
            type_errors=self.type_errors,
            min=self.min if present else None,
            max=self.max if present else None,
            mean=self.mean if present else None,
            std=math.sqrt(self.m2 / self.count) if present else None,
            edges=[float(e) for e in edges],
            counts=[int(c) for c in bin_counts(s, edges)],
            quantiles=[float(q) for q in quantiles],
            frequent_values=_frequent(s),
            sample_size=int(s.size),
        )


def _frequent(s: np.ndarray) -> list[tuple[float, int]]:
    """Values making up at least 1% of the sample (and seen twice), most frequent first."""
    if s.size == 0:
        return []
    vals, cnts = np.unique(s, return_counts=True)
    keep = (cnts >= FREQUENT_SHARE * s.size) & (cnts >= 2)
    vals, cnts = vals[keep], cnts[keep]
    order = np.lexsort((vals, -cnts))[:MAX_FREQUENT]
    return [(float(vals[i]), int(cnts[i])) for i in order]


class _CategoricalAcc:
    """Exact counts of at most ``max_known`` distinct values; the rest go to ``overflow``."""

    def __init__(self, max_known: int, missing: int, bad: int) -> None:
        self.max_known = max_known
        self.n = missing + bad
        self.missing = missing
        self.type_errors = bad
        self.counts: dict[str, int] = {}
        self.overflow = 0

    def add(self, column: list[Any]) -> None:
        values, missing, bad = _categorical_split(column)
        self.n += len(column)
        self.missing += missing
        self.type_errors += bad
        counts = self.counts
        for v, c in Counter(values).items():  # in order of first appearance
            if v in counts:
                counts[v] += c
            elif len(counts) < self.max_known:
                counts[v] = c
            else:
                self.overflow += c

    def profile(self, top_k: int) -> CategoricalProfile:
        cats = top_categories(self.counts, top_k)
        kept = [self.counts[c] for c in cats]
        total = sum(self.counts.values()) + self.overflow
        return CategoricalProfile(
            n=self.n,
            missing=self.missing,
            type_errors=self.type_errors,
            categories=cats,
            counts=[*kept, total - sum(kept)],
            known=sorted(self.counts),
            known_complete=self.overflow == 0,
            singletons=sum(1 for c in self.counts.values() if c == 1),
        )


class _Column:
    """One profiled column: where its values come from, how they are read, its accumulator."""

    def __init__(
        self,
        name: str,
        source: str,
        forced: str | None,
        convert: Callable[[Any], Any] | None,
        rows_before: int,
    ) -> None:
        # Rows read before the column first appeared count as missing values of it.
        self.name = name
        self.source = source
        self.forced = forced
        self.convert = convert
        self.acc: _NumericAcc | _CategoricalAcc | None = None
        self.pending_missing = rows_before
        self.pending_bad = 0


# ------------------------------------------------------------------------------------ builder
class ProfileBuilder:
    """Streaming builder behind :func:`build_profile` (same parameters, plus ``text_cells``).

    Feed rows with :meth:`update` as often as needed, then call :meth:`build`. Memory is bounded
    by ``sample_size`` floats per numeric column, ``max_known`` strings per categorical column,
    ``row_sample`` rows and one chunk of rows.

    Parameters
    ----------
    text_cells
        Cells are text (CSV): ``""``, ``"NA"``, ``"NaN"``, ``"nan"``, ``"null"``, ``"NULL"`` and
        ``"None"`` are missing, ``"true"``/``"false"`` (also capitalised or upper case) are
        booleans, and anything ``float()`` parses is a number, except in ``categorical``
        columns, where numbers stay strings.

    Examples
    --------
    >>> b = ProfileBuilder(model_id="m", text_cells=True)
    >>> b = b.update([{"x": "1.5", "c": "a"}, {"x": "NA", "c": "2"}, {"x": "oops", "c": "b"}])
    >>> p = b.build()
    >>> p.features["x"].missing, p.features["x"].type_errors, p.features["c"].type_errors
    (1, 1, 1)
    """

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str | None = None,
        source: str = "",
        n_bins: int = 10,
        top_k: int = 20,
        score_column: str | None = None,
        label_column: str | None = None,
        exclude: Collection[str] = (),
        categorical: Collection[str] = (),
        features: Collection[str] | None = None,
        sample_size: int = 1_000_000,
        row_sample: int = 512,
        max_known: int = 10_000,
        seed: int = 0,
        max_features: int = 1000,
        text_cells: bool = False,
    ) -> None:
        for pname, value, low in (
            ("n_bins", n_bins, 1),
            ("top_k", top_k, 0),
            ("sample_size", sample_size, 1),
            ("row_sample", row_sample, 0),
            ("max_known", max_known, 1),
            ("seed", seed, 0),
            ("max_features", max_features, 0),
        ):
            if value < low:
                raise ValueError(f"{pname} must be >= {low}, got {value}")
        self.model_id = model_id
        self.model_version = model_version
        self.source = source
        self.n_bins = n_bins
        self.top_k = top_k
        self.score_column = score_column
        self.label_column = label_column
        self.exclude = frozenset(exclude)
        self.categorical = frozenset(categorical)
        self.only = None if features is None else frozenset(features)
        self.sample_size = sample_size
        self.row_sample = row_sample
        self.max_known = max_known
        self.seed = seed
        self.max_features = max_features
        self.text_cells = text_cells
        self.n_rows = 0
        self.invalid_events = 0
        self.other_models = 0
        self.refused = 0
        self._chunks = 0
        self._rows_read = 0  # input rows, invalid events included
        self._columns: dict[str, _Column] = {}  # by source key
        self._ignored: set[str] = set()
        self._n_features = 0
        self._rows: list[Mapping[str, Any]] = []
        self._rows_seen = 0
        self._row_rng = np.random.default_rng([seed, 1 << 32])

    # --- feeding ------------------------------------------------------------------------------
    def update(self, rows: Iterable[Mapping[str, Any]]) -> ProfileBuilder:
        """Consume ``rows`` (any iterable, read chunk by chunk); returns ``self``."""
        it = iter(rows)
        while chunk := list(itertools.islice(it, CHUNK_ROWS)):
            self._add_chunk(chunk)
        return self

    def _add_chunk(self, raw: list[Mapping[str, Any]]) -> None:
        chunk: list[Mapping[str, Any]] = []
        for i, r in enumerate(raw):
            if isinstance(r.get("features"), dict):
                flat = self._event_row(r, self._rows_read + i)
                if flat is not None:
                    chunk.append(flat)
            else:
                chunk.append(r)
        self._rows_read += len(raw)
        if not chunk:
            return
        for key in dict.fromkeys(itertools.chain.from_iterable(chunk)):
            if key not in self._columns and key not in self._ignored:
                self._register(key)
        for col in self._columns.values():
            values = [r.get(col.source) for r in chunk]
            if col.convert is not None:
                values = [col.convert(v) for v in values]
            self._feed(col, values)
        fill, slots, src = _reservoir_plan(
            self._rows_seen, len(chunk), self.row_sample, self._row_rng
        )
        self._rows.extend(chunk[:fill])
        for slot, i in zip(slots.tolist(), src.tolist(), strict=True):
            self._rows[slot] = chunk[i]
        self._rows_seen += len(chunk)
        self.n_rows += len(chunk)
        self._chunks += 1
        if self._chunks == 1:
            self._check_outputs()

    def _event_row(self, row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
        """A recorded PredictionEvent flattened into features plus the model outputs."""
        try:
            e = PredictionEvent.model_validate(row)
        except ValidationError as exc:
            self.invalid_events += 1
            if self.invalid_events <= 5:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                log.warning(
                    "skipping invalid prediction event source=%s row=%d field=%s error=%s",
                    self.source,
                    index + 1,
                    where,
                    err["msg"],
                )
            return None
        if e.model_id != self.model_id:
            self.other_models += 1
        flat: dict[str, Any] = dict(e.features)
        if self.score_column is None and (s := e.prediction_score()) is not None:
            flat[PREDICTION_SCORE] = s
        if self.label_column is None and (lab := e.prediction_label()) is not None:
            flat[PREDICTION_LABEL] = lab
        return flat

    def _register(self, key: str) -> None:
        text = self.text_cells
        n = self.n_rows
        score_src = self.score_column or PREDICTION_SCORE
        label_src = self.label_column or PREDICTION_LABEL
        if not isinstance(key, str):
            self._ignored.add(key)
            return
        if key == score_src:
            col = _Column(PREDICTION_SCORE, key, "numeric", _parse_text if text else None, n)
        elif key == label_src:
            conv = (lambda v: _label_value(_parse_text(v))) if text else _label_value
            col = _Column(PREDICTION_LABEL, key, "categorical", conv, n)
        elif (
            key in self.exclude
            or key in (PREDICTION_SCORE, PREDICTION_LABEL)
            or (self.only is not None and key not in self.only)
        ):
            self._ignored.add(key)
            return
        elif self._n_features >= self.max_features:
            self._ignored.add(key)
            self.refused += 1
            return
        else:
            self._n_features += 1
            if key in self.categorical:
                col = _Column(key, key, "categorical", _parse_text_categorical if text else None, n)
            else:
                col = _Column(key, key, None, _parse_text if text else None, n)
        self._columns[key] = col

    def _feed(self, col: _Column, values: list[Any]) -> None:
        if col.acc is None:
            kind = col.forced
            if kind is None:
                for v in values:
                    k = _kind(v)
                    if k == "numeric" or k == "categorical":
                        kind = k
                        break
            if kind is None:
                other = sum(1 for v in values if _kind(v) == "other")
                col.pending_bad += other
                col.pending_missing += len(values) - other
                return
            col.acc = self._new_acc(col, kind)
        col.acc.add(values)

    def _new_acc(self, col: _Column, kind: str) -> _NumericAcc | _CategoricalAcc:
        if kind == "categorical":
            return _CategoricalAcc(self.max_known, col.pending_missing, col.pending_bad)
        rng = np.random.default_rng([self.seed, zlib.crc32(col.name.encode())])
        return _NumericAcc(self.sample_size, rng, col.pending_missing, col.pending_bad)

    def _check_outputs(self) -> None:
        for what, key in (("score", self.score_column), ("label", self.label_column)):
            if key is not None and key not in self._columns:
                seen = sorted(k for k in (*self._columns, *self._ignored) if isinstance(k, str))
                shown = ", ".join(seen[:20]) + (", ..." if len(seen) > 20 else "")
                raise ConfigError(
                    f"{self.source or 'input'}: {what} column {key!r} not found in the first "
                    f"{self.n_rows} rows (columns: {shown})"
                )

    # --- result -------------------------------------------------------------------------------
    def build(self) -> Profile:
        """The profile of every row fed so far.

        Raises
        ------
        ConfigError
            No (valid) rows, or a named score/label column never appeared.
        """
        where = self.source or "input"
        if self.n_rows == 0:
            extra = f" ({self.invalid_events} invalid prediction events)" * bool(
                self.invalid_events
            )
            raise ConfigError(f"{where}: no rows to profile{extra}")
        self._check_outputs()
        if self.invalid_events:
            log.warning("skipped invalid prediction events=%d", self.invalid_events)
        if self.other_models:
            log.warning(
                "prediction events of other models than %s=%d", self.model_id, self.other_models
            )
        if self.refused:
            log.warning(
                "columns not profiled (max_features=%d reached)=%d", self.max_features, self.refused
            )
        named = (self.only or frozenset()) | self.categorical | self.exclude
        absent = sorted(named - self._columns.keys() - self._ignored)
        if absent:
            log.warning("named columns not found in %s: %s", where, ", ".join(absent))
        feats: dict[str, NumericProfile | CategoricalProfile] = {}
        outputs: dict[str, NumericProfile | CategoricalProfile] = {}
        for col in self._columns.values():
            acc = col.acc
            if acc is None:
                log.warning("column %s has no usable value; profiled as numeric", col.name)
                acc = self._new_acc(col, "numeric")
            prof: NumericProfile | CategoricalProfile
            if isinstance(acc, _NumericAcc):
                prof = acc.profile(self.n_bins)
            else:
                prof = acc.profile(self.top_k)
            if prof.n != self.n_rows:  # pragma: no cover - internal invariant
                raise AssertionError(f"column {col.name} saw {prof.n} of {self.n_rows} rows")
            is_output = col.name in (PREDICTION_SCORE, PREDICTION_LABEL)
            (outputs if is_output else feats)[col.name] = prof
        sample_cols = [n for n, f in feats.items() if isinstance(f, NumericProfile)]
        convert = _parse_text if self.text_cells else (lambda v: v)
        sample_rows = [[_as_float(convert(r.get(c))) for c in sample_cols] for r in self._rows]
        return Profile(
            model_id=self.model_id,
            model_version=self.model_version,
            created_at=time.time(),
            source=self.source,
            n_rows=self.n_rows,
            n_bins=self.n_bins,
            top_k=self.top_k,
            features={**feats, **outputs},
            sample_columns=sample_cols,
            sample_rows=sample_rows,
        )


def build_profile(
    rows: Iterable[Mapping[str, Any]],
    *,
    model_id: str,
    model_version: str | None = None,
    source: str = "",
    n_bins: int = 10,
    top_k: int = 20,
    score_column: str | None = None,
    label_column: str | None = None,
    exclude: Collection[str] = (),
    categorical: Collection[str] = (),
    features: Collection[str] | None = None,
    sample_size: int = 1_000_000,
    row_sample: int = 512,
    max_known: int = 10_000,
    seed: int = 0,
    max_features: int = 1000,
    text_cells: bool = False,
) -> Profile:
    """Profile a training set in one streaming pass.

    Parameters
    ----------
    rows
        Mappings of column name to value. A row with a dict field ``"features"`` is a recorded
        :class:`~stream_monitor.events.schema.PredictionEvent`: its features are the columns and
        its prediction gives the outputs (unless ``score_column``/``label_column`` name
        features); invalid events are skipped with a warning.
    model_id, model_version, source
        Recorded in the profile (``source`` is the input file name).
    n_bins, top_k
        Numeric bins (quantile edges) and categories kept before "other".
    score_column, label_column
        Columns holding the model's outputs, profiled as ``"prediction.score"`` (numeric) and
        ``"prediction.label"`` (categorical). Columns already named so are used by default.
    exclude, categorical, features
        Columns to skip (targets, ids); columns to treat as categorical whatever their values;
        if given, the only feature columns to profile.
    sample_size
        Present values per numeric column kept (uniform reservoir) for bins and quantiles.
    row_sample, max_known, seed, max_features
        Rows kept for multivariate checks; distinct categories counted exactly; random seed;
        feature columns profiled at most (later ones are skipped with a warning).
    text_cells
        The cells are text (CSV); see :class:`ProfileBuilder`.

    Raises
    ------
    ConfigError
        No rows, or a named score/label column absent.

    Examples
    --------
    >>> rows = [{"amount": float(i), "label": i % 2 == 0} for i in range(100)]
    >>> p = build_profile(rows, model_id="m", label_column="label", n_bins=4)
    >>> p.features["amount"].edges, p.features["amount"].counts
    ([24.75, 49.5, 74.25], [25, 25, 25, 25])
    >>> p.features["prediction.label"].categories
    ['false', 'true']
    """
    builder = ProfileBuilder(
        model_id=model_id,
        model_version=model_version,
        source=source,
        n_bins=n_bins,
        top_k=top_k,
        score_column=score_column,
        label_column=label_column,
        exclude=exclude,
        categorical=categorical,
        features=features,
        sample_size=sample_size,
        row_sample=row_sample,
        max_known=max_known,
        seed=seed,
        max_features=max_features,
        text_cells=text_cells,
    )
    return builder.update(rows).build()


def profile_file(path: str | os.PathLike[str], fmt: str | None = None, **options: Any) -> Profile:
    """Profile a CSV, JSON Lines or Parquet file (see :func:`~.readers.read_rows`).

    ``options`` are those of :func:`build_profile`; ``source`` defaults to the file name and
    ``text_cells`` is set for CSV.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = Path(d, "train.csv").write_text("x,c\\n1.5,a\\nNA,b\\n")
    ...     p = profile_file(Path(d, "train.csv"), model_id="m")
    >>> p.source, p.features["x"].missing, p.features["c"].known
    ('train.csv', 1, ['a', 'b'])
    """
    from stream_monitor.reference.readers import infer_format, read_rows

    fmt = fmt or infer_format(path)
    options.setdefault("source", Path(path).name)
    options.setdefault("text_cells", fmt == "csv")
    return build_profile(read_rows(path, fmt), **options)


def load_profiles(
    references: Iterable[ReferenceFile],
) -> dict[tuple[str, str | None], Profile]:
    """Read every configured profile, keyed by ``(model_id, model_version)``.

    Raises
    ------
    ConfigError
        When a file cannot be read (see :func:`load_profile`), when it profiles another model
        than the one it is configured for, or when two entries name the same model and version.
    """
    out: dict[tuple[str, str | None], Profile] = {}
    for ref in references:
        key = (ref.model_id, ref.model_version)
        if key in out:
            raise ConfigError(
                f"two references for model {ref.model_id!r} version {ref.model_version!r}"
            )
        prof = load_profile(ref.path)
        if prof.model_id != ref.model_id:
            raise ConfigError(
                f"{ref.path}: profiles model {prof.model_id!r}, configured for {ref.model_id!r}"
            )
        if ref.model_version is not None and prof.model_version != ref.model_version:
            raise ConfigError(
                f"{ref.path}: profiles version {prof.model_version!r} of model "
                f"{ref.model_id!r}, configured for version {ref.model_version!r}"
            )
        out[key] = prof
    return out
