"""Row readers for training sets: CSV, JSON Lines and Parquet, optionally gzip-compressed.

Rows are plain dicts. CSV cells stay strings (the profile builder parses them, see
``ProfileBuilder(text_cells=True)``); JSON Lines and Parquet values keep their JSON/Arrow types.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as d:
...     _ = Path(d, "t.jsonl").write_text('{"x": 1.5, "c": "a"}\\n\\n{"x": null, "c": "b"}\\n')
...     list(read_rows(Path(d, "t.jsonl")))
[{'x': 1.5, 'c': 'a'}, {'x': None, 'c': 'b'}]
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from stream_monitor.errors import ConfigError

__all__ = ["FORMATS", "infer_format", "read_rows"]

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Rows per Parquet record batch.
BATCH_ROWS = 10_000


def _is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def infer_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` from its suffix (a trailing ``.gz`` is ignored).

    Examples
    --------
    >>> infer_format("train.csv.gz"), infer_format("events.ndjson"), infer_format("t.pq")
    ('csv', 'jsonl', 'parquet')
    """
    p = Path(path)
    if _is_gzip(p):
        p = p.with_suffix("")
    fmt = _SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: cannot tell the format from the file name; use one of "
            f"{', '.join(_SUFFIXES)} (optionally .gz) or give the format explicitly"
        )
    return fmt


def read_rows(path: str | os.PathLike[str], fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Iterate the rows of a CSV, JSON Lines or Parquet file as dicts.

    Parameters
    ----------
    path
        The file; ``.gz`` files are decompressed (CSV and JSON Lines only).
    fmt
        ``"csv"``, ``"jsonl"`` or ``"parquet"``; inferred from the suffix when ``None``.

    Raises
    ------
    ConfigError
        The file is missing, its format unknown, or a line is not a JSON object (naming the
        file and line). Checked when called, except errors in the content, raised while
        iterating.
    """
    p = Path(path)
    fmt = fmt or infer_format(p)
    if fmt not in FORMATS:
        raise ConfigError(f"{path}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if not p.is_file():
        raise ConfigError(f"{path}: no such file")
    if fmt == "csv":
        return _read_csv(p)
    if fmt == "jsonl":
        return _read_jsonl(p)
    if _is_gzip(p):
        raise ConfigError(f"{path}: gzip-compressed Parquet is not supported")
    return _read_parquet(p)


def _open_text(p: Path) -> IO[str]:
    if _is_gzip(p):
        return gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    return p.open(encoding="utf-8-sig", newline="")


def _read_csv(p: Path) -> Iterator[dict[str, Any]]:
    ragged = 0
    try:
        with _open_text(p) as f:
            reader = csv.DictReader(f)
            try:
                for row in reader:
                    if None in row:  # more cells than the header names
                        del row[None]  # type: ignore[arg-type]
                        ragged += 1
                    yield row
            except csv.Error as exc:
                raise ConfigError(f"{p}:{reader.line_num}: bad CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    if ragged:
        log.warning("rows with more cells than the header file=%s rows=%d", p, ragged)


def _read_jsonl(p: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(p, "rb") if _is_gzip(p) else p.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ConfigError(f"{p}:{lineno}: invalid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise ConfigError(
                        f"{p}:{lineno}: expected a JSON object per line (JSON Lines), "
                        f"got {type(row).__name__}"
                    )
                yield row
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None


def _read_parquet(p: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "reading Parquet needs pyarrow: pip install 'stream-drift-monitor[parquet]'"
        ) from None
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{p}: not a readable Parquet file ({exc})") from None
    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        # Decimals would come out as decimal.Decimal, which the monitor never receives.
        for i, field in enumerate(batch.schema):
            if pa.types.is_decimal(field.type):
                batch = batch.set_column(i, field.name, batch.column(i).cast(pa.float64()))
        yield from batch.to_pylist()
