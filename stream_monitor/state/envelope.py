"""The envelope of a partition-state checkpoint (pure: no I/O, no clock, no pickle).

A checkpoint is one Kafka record of the changelog topic, one per input partition number
(plus the chunks of its label join's older waiting predictions, each a record of its own
under ``"<partition>/join/<chunk>"``, see :func:`encode_chunk`):

* **record key**: the partition number in ASCII (``b"3"``), so compaction keeps the latest
  checkpoint of each partition and the record is written to changelog partition 3;
* **record value**: ``orjson.dumps`` of the object ``{"format", "version", "group",
  "partition", "sequence", "offsets", "created_at", "state"}``;
* **headers**: ``x-checkpoint-format`` (``b"stream-monitor-checkpoint/2"``, informational only)
  and, when a secret is configured, ``x-hmac-sha256``: the lower-case hex HMAC-SHA256 of the
  record under it.

The state is plain data (JSON; nothing in it is ever unpickled or executed), so a checkpoint is
safe to load without a signature: an unsigned changelog is the default. The signature is
optional integrity against anyone else who can write the topic. It covers the record key and
the value together (see :func:`_mac` for the exact bytes), and the value names the consumer
group, the partition and a per-partition ``sequence`` that grows with every checkpoint, so a
genuine checkpoint cannot be moved to another partition's key or another group's changelog;
an old genuine checkpoint produced again is refused by the caller because its input offsets
lie behind the group's committed offsets (``stale``, see ``assignment.py``).
:func:`decode_snapshot` verifies the MAC (in constant time) before it even parses the JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import orjson

__all__ = [
    "CHUNK_FORMAT",
    "ENVELOPE_VERSION",
    "FORMAT",
    "FORMAT_HEADER",
    "MIN_SECRET_LENGTH",
    "SIGNATURE_HEADER",
    "RefusalReason",
    "Refused",
    "Snapshot",
    "checkpoint_key",
    "chunk_digest",
    "chunk_key",
    "chunk_of",
    "decode_chunk",
    "decode_snapshot",
    "encode_chunk",
    "encode_snapshot",
    "key_from_secret",
]

#: The ``format`` field of every checkpoint value.
FORMAT = "stream-monitor-checkpoint"
#: The envelope version this release writes.
ENVELOPE_VERSION = 2
#: Header naming format and version (informational: the signed ``version`` field decides).
FORMAT_HEADER = "x-checkpoint-format"
#: Header carrying the hex HMAC-SHA256 of the record.
SIGNATURE_HEADER = "x-hmac-sha256"
#: Shortest secret :func:`key_from_secret` accepts, in bytes (UTF-8): an HMAC-SHA256 key
#: should be at least as long as its output.
MIN_SECRET_LENGTH = 32

RefusalReason = Literal[
    "unsigned",
    "bad_signature",
    "malformed",
    "unsupported_version",
    "wrong_partition",
    "wrong_group",
    "stale",
]

# Domain separation: a MAC made with the same secret for any other purpose never verifies here.
_MAC_DOMAIN = b"stream-monitor-checkpoint-hmac\x00"
_FIELDS = (
    "format", "version", "group", "partition", "sequence", "offsets", "created_at", "state",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """The checkpoint of one input partition.

    Attributes
    ----------
    partition
        The input partition number (also the changelog partition and record key).
    offsets
        Input topic -> the next offset to read from that topic's ``partition``.
    state
        ``PartitionState.snapshot()``: JSON-compatible (str keys; tuples come back as lists).
    created_at
        Wall-clock time of the checkpoint in seconds since the epoch, given by the caller.
    version
        The envelope version (:data:`ENVELOPE_VERSION` unless testing compatibility).
    group
        The consumer group whose state this is.
    sequence
        Grows by one with every checkpoint of the partition (restores continue it).
    """

    partition: int
    offsets: dict[str, int]
    state: dict[str, Any]
    created_at: float
    version: int = ENVELOPE_VERSION
    group: str = ""
    sequence: int = 0


@dataclass(frozen=True)
class Refused:
    """Why a changelog record was not accepted as a checkpoint.

    Attributes
    ----------
    reason
        Machine-readable: ``"unsigned"`` (a secret is configured but the record has no
        signature), ``"bad_signature"`` (forged, corrupted, or signed with another secret),
        ``"malformed"`` (not a checkpoint of the expected shape), ``"unsupported_version"`` (a
        version this release does not read), ``"wrong_partition"`` (a checkpoint of another
        partition), ``"wrong_group"`` (of another consumer group) or ``"stale"`` (older than
        what the group committed since: decided by the caller).
    detail
        Human-readable explanation, safe to log (never contains the state).
    """

    reason: RefusalReason
    detail: str


def key_from_secret(secret: str) -> bytes:
    """Turn the configured checkpoint secret into an HMAC key (its UTF-8 bytes).

    Secrets shorter than :data:`MIN_SECRET_LENGTH` bytes (UTF-8) are refused: every changelog
    record is a (message, MAC) pair that anyone able to read the topic can use to guess the
    secret offline, and a guessed secret lets them sign checkpoints of their own. Use a long
    random value, e.g. ``python -c "import secrets; print(secrets.token_urlsafe(32))"``.

    Parameters
    ----------
    secret
        The secret as configured; it is used as is (no stripping).

    Returns
    -------
    bytes
        The HMAC key.

    Raises
    ------
    ValueError
        If ``secret`` is empty or shorter than :data:`MIN_SECRET_LENGTH` bytes.

    Examples
    --------
    >>> key_from_secret("correct horse battery staple, twice")
    b'correct horse battery staple, twice'
    >>> key_from_secret("hunter2")
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint secret must be at least 32 bytes long (UTF-8), got 7
    """
    if not secret:
        raise ValueError("the checkpoint secret is empty; configure a long random secret")
    key = secret.encode("utf-8")
    if len(key) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the checkpoint secret must be at least {MIN_SECRET_LENGTH} bytes long (UTF-8), "
            f"got {len(key)}"
        )
    return key


def checkpoint_key(partition: int) -> bytes:
    """The record key of ``partition``'s checkpoint: its number in ASCII."""
    return str(partition).encode("ascii")


def _mac(key: bytes, record_key: bytes, value: bytes) -> bytes:
    """Hex HMAC-SHA256 over ``domain || len(record_key) as 8-byte big-endian || record_key ||
    value``. The length prefix makes the key/value split unambiguous for any bytes."""
    mac = hmac.new(key, _MAC_DOMAIN, hashlib.sha256)
    mac.update(len(record_key).to_bytes(8, "big"))
    mac.update(record_key)
    mac.update(value)
    return mac.hexdigest().encode("ascii")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the HMAC key must be non-empty bytes (see key_from_secret)")


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _shape_problem(
    partition: object,
    offsets: object,
    created_at: object,
    state: object,
    group: object = "",
    sequence: object = 0,
) -> str | None:
    """What is wrong with the fields of a checkpoint, or None if nothing."""
    if not _is_int(partition) or partition < 0:
        return f"partition is {partition!r}, not a non-negative int"
    if not isinstance(group, str):
        return f"group is {group!r}, not a string"
    if not _is_int(sequence) or sequence < 0:
        return f"sequence is {sequence!r}, not a non-negative int"
    if not isinstance(offsets, dict) or not all(
        isinstance(t, str) and _is_int(o) and o >= 0 for t, o in offsets.items()
    ):
        return "offsets is not an object of topic -> non-negative int"
    if (
        not isinstance(created_at, int | float)
        or isinstance(created_at, bool)
        or not math.isfinite(created_at)
    ):
        return f"created_at is {created_at!r}, not a finite number"
    if not isinstance(state, dict):
        return f"state is a {type(state).__name__}, not an object"
    return None


def encode_snapshot(
    snap: Snapshot, key: bytes | None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Serialise (and, with a key, sign) a checkpoint as a changelog record.

    Parameters
    ----------
    snap
        The checkpoint. ``state`` must be JSON-compatible with str keys; note that ``NaN`` and
        infinities become ``null`` in JSON, so keep them out of the state.
    key
        The HMAC key (:func:`key_from_secret`), or None for an unsigned record.

    Returns
    -------
    tuple
        ``(record_key, record_value, headers)``, to be produced to changelog partition
        ``snap.partition``.

    Raises
    ------
    ValueError
        If ``key`` is empty or a field has a value :func:`decode_snapshot` would refuse
        (negative or non-int partition or offset, non-finite ``created_at``, ...).
    TypeError
        If the snapshot is not JSON-serialisable (``orjson.JSONEncodeError``).

    Examples
    --------
    >>> key = key_from_secret("0123456789abcdef-not-a-real-secret")
    >>> snap = Snapshot(3, {"predictions": 42}, {"v": 1}, 1700000000.5, group="g", sequence=9)
    >>> rkey, value, headers = encode_snapshot(snap, key)
    >>> rkey
    b'3'
    >>> [name for name, _ in headers]
    ['x-checkpoint-format', 'x-hmac-sha256']
    >>> decode_snapshot(rkey, value, headers, key, expected_partition=3, expected_group="g") == snap
    True

    Without a key the record is not signed, and reads back without one:

    >>> rkey, value, headers = encode_snapshot(snap, None)
    >>> [name for name, _ in headers]
    ['x-checkpoint-format']
    >>> decode_snapshot(rkey, value, headers, None, expected_partition=3).sequence
    9
    """
    if key is not None:
        _check_key(key)
    problem = _shape_problem(
        snap.partition, snap.offsets, snap.created_at, snap.state, snap.group, snap.sequence
    )
    if problem is None and not _is_int(snap.version):
        problem = f"version is {snap.version!r}, not an int"
    if problem is not None:
        raise ValueError(f"cannot encode snapshot: {problem}")
    record_key = checkpoint_key(snap.partition)
    value = orjson.dumps(
        {
            "format": FORMAT,
            "version": snap.version,
            "group": snap.group,
            "partition": snap.partition,
            "sequence": snap.sequence,
            "offsets": snap.offsets,
            "created_at": snap.created_at,
            "state": snap.state,
        }
    )
    headers = [(FORMAT_HEADER, f"{FORMAT}/{snap.version}".encode("ascii"))]
    if key is not None:
        headers.append((SIGNATURE_HEADER, _mac(key, record_key, value)))
    return record_key, value, headers


def _signatures(headers: Iterable[Any] | None) -> list[object]:
    """The values of every signature header (defensive: headers are untrusted data)."""
    out: list[object] = []
    if not headers:
        return out
    for h in headers:
        if isinstance(h, tuple) and len(h) == 2 and h[0] == SIGNATURE_HEADER:
            out.append(h[1])
    return out


def decode_snapshot(
    record_key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    key: bytes | None,
    *,
    expected_partition: int,
    expected_group: str | None = None,
    supported_versions: frozenset[int] = frozenset({ENVELOPE_VERSION}),
) -> Snapshot | Refused:
    """Authenticate (with a key) and parse a changelog record; refuse anything that is not a
    checkpoint of ``expected_partition`` (and ``expected_group``) in a supported version.

    Checks, in this order, with a key: a signature header is present (``"unsigned"``); the MAC
    over record key and value verifies in constant time, before anything is parsed
    (``"bad_signature"``); without a key any signature is ignored; then, either way:
    the value is a JSON object with ``format`` == :data:`FORMAT` and an int ``version``
    (``"malformed"``); the version is in ``supported_versions`` (``"unsupported_version"``; the
    version is checked before the remaining fields because another version may have another
    shape); the remaining fields have the right types (``"malformed"``); the record key and
    the ``partition`` field both name ``expected_partition`` (``"wrong_partition"``); the
    ``group`` field is ``expected_group`` when one is given (``"wrong_group"``).

    Nothing is ever unpickled: ``state`` is returned as parsed JSON.

    Parameters
    ----------
    record_key, value, headers
        The changelog record as read (a tombstone has ``value=None``).
    key
        The HMAC key (:func:`key_from_secret`), or None to read unsigned checkpoints.
    expected_partition
        The input partition being restored.
    expected_group
        The consumer group restoring it (None: not checked).
    supported_versions
        Envelope versions the caller can read.

    Returns
    -------
    Snapshot or Refused
        Never raises on record data.

    Raises
    ------
    ValueError
        Only if ``key`` is empty bytes (a configuration error, not a data error).

    Examples
    --------
    >>> key = key_from_secret("0123456789abcdef-not-a-real-secret")
    >>> rkey, value, headers = encode_snapshot(Snapshot(1, {"t": 7}, {}, 0.0), key)
    >>> decode_snapshot(rkey, value, headers, key, expected_partition=1).offsets
    {'t': 7}
    >>> decode_snapshot(rkey, value, headers, key, expected_partition=0).reason
    'wrong_partition'
    >>> decode_snapshot(rkey, value, [], key, expected_partition=1).reason
    'unsigned'
    >>> decode_snapshot(rkey, value, headers, b"another-key-of-16+chars",
    ...                 expected_partition=1).reason
    'bad_signature'
    """
    tombstone = " (tombstone)" if value is None else ""
    if key is not None:
        refused = _verify(record_key, value, headers, key, tombstone)
        if refused is not None:
            return refused
    elif record_key is not None and not isinstance(record_key, bytes):
        return Refused("malformed", "record key is not bytes")
    elif value is not None and not isinstance(value, bytes):
        return Refused("malformed", "record value is not bytes")
    return _parse(record_key, value, expected_partition, expected_group, supported_versions)


def _verify(
    record_key: object, value: object, headers: Any, key: bytes, tombstone: str
) -> Refused | None:
    """Why the record's signature does not verify under ``key``, or None when it does."""
    _check_key(key)
    sigs = _signatures(headers)
    if not sigs or all(s is None for s in sigs):
        return Refused("unsigned", f"record has no {SIGNATURE_HEADER} header{tombstone}")
    if len(sigs) > 1:
        return Refused("bad_signature", f"record has {len(sigs)} {SIGNATURE_HEADER} headers")
    sig = sigs[0]
    if not isinstance(sig, bytes):
        return Refused("bad_signature", f"{SIGNATURE_HEADER} header is not bytes")
    if record_key is not None and not isinstance(record_key, bytes):
        return Refused("bad_signature", "record key is not bytes")
    if value is not None and not isinstance(value, bytes):
        return Refused("bad_signature", "record value is not bytes")
    expected_mac = _mac(key, record_key or b"", value or b"")  # type: ignore[arg-type]
    if not hmac.compare_digest(expected_mac, sig):
        return Refused(
            "bad_signature",
            "HMAC does not verify: the record was altered, forged, moved to another key, "
            f"or signed with another secret{tombstone}",
        )
    return None


def _parse(
    record_key: bytes | None,
    value: bytes | None,
    expected_partition: int,
    expected_group: str | None,
    supported_versions: frozenset[int],
) -> Snapshot | Refused:
    """The checkpoint in an (authenticated, or unsigned by configuration) record."""
    if value is None:
        return Refused("malformed", "tombstone: no checkpoint value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Refused("malformed", f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Refused("malformed", f"value is a JSON {type(doc).__name__}, not an object")
    if doc.get("format") != FORMAT:
        return Refused("malformed", f"format is {doc.get('format')!r}, not {FORMAT!r}")
    version = doc.get("version")
    if not _is_int(version):
        return Refused("malformed", f"version is {version!r}, not an int")
    if version not in supported_versions:
        return Refused(
            "unsupported_version",
            f"snapshot version {version}; supported versions: {sorted(supported_versions)}",
        )
    missing = [f for f in _FIELDS if f not in doc]
    if missing:
        return Refused("malformed", f"missing fields: {', '.join(missing)}")
    partition = doc["partition"]
    offsets = doc["offsets"]
    created_at = doc["created_at"]
    state = doc["state"]
    group, sequence = doc["group"], doc["sequence"]
    problem = _shape_problem(partition, offsets, created_at, state, group, sequence)
    if problem is not None:
        return Refused("malformed", problem)
    if record_key != checkpoint_key(expected_partition):
        return Refused(
            "wrong_partition",
            f"record key {record_key!r} does not name partition {expected_partition}",
        )
    if partition != expected_partition:
        return Refused(
            "wrong_partition",
            f"checkpoint is of partition {partition}, expected {expected_partition}",
        )
    if expected_group is not None and group != expected_group:
        return Refused(
            "wrong_group", f"checkpoint is of group {group!r}, expected {expected_group!r}"
        )
    return Snapshot(
        partition=partition,
        offsets=offsets,
        state=state,
        created_at=float(created_at),
        version=version,
        group=group,
        sequence=sequence,
    )


# --- label-join chunks --------------------------------------------------------------------------
#: The ``format`` field of a label-join chunk record.
CHUNK_FORMAT = "stream-monitor-join-chunk"
CHUNK_VERSION = 1


def chunk_key(partition: int, chunk: int) -> bytes:
    """The record key of chunk ``chunk`` of ``partition``'s label join (written to changelog
    partition ``partition`` beside its checkpoint, whose key is the partition number alone).

    >>> chunk_key(3, 17), chunk_of(b"3/join/17", 3), chunk_of(b"3", 3), chunk_of(b"4/join/1", 3)
    (b'3/join/17', 17, None, None)
    """
    return f"{partition}/join/{chunk}".encode("ascii")


def chunk_of(record_key: bytes | None, partition: int) -> int | None:
    """The chunk number a record key names for ``partition``, or None."""
    prefix = f"{partition}/join/".encode("ascii")
    if not record_key or not record_key.startswith(prefix):
        return None
    rest = record_key[len(prefix) :]
    return int(rest) if rest.isdigit() and len(rest) < 19 else None


def encode_chunk(group: str, partition: int, chunk: int, contents: dict[str, Any]) -> bytes:
    """The record value of a label-join chunk (``LabelJoin.split_snapshot``'s contents).

    Chunk records carry no signature of their own: the checkpoint that lists a chunk names the
    :func:`chunk_digest` of its value, so with a signed checkpoint the chunk is authenticated
    too, and an older or foreign record under the same key is refused.

    >>> value = encode_chunk("g", 3, 17, {"models": {}})
    >>> decode_chunk(value, chunk_digest(value), group="g", partition=3, chunk=17)
    {'models': {}}
    >>> decode_chunk(value, "0" * 64, group="g", partition=3, chunk=17)
    Refused(reason='bad_signature', detail='chunk 17 does not match its checkpoint digest')
    """
    return orjson.dumps(
        {
            "format": CHUNK_FORMAT,
            "version": CHUNK_VERSION,
            "group": group,
            "partition": partition,
            "chunk": chunk,
            "contents": contents,
        }
    )


def chunk_digest(value: bytes) -> str:
    """Hex SHA-256 of a chunk record's value, as its checkpoint names it."""
    return hashlib.sha256(value).hexdigest()


def decode_chunk(
    value: bytes | None, digest: str, *, group: str, partition: int, chunk: int
) -> dict[str, Any] | Refused:
    """The contents of a chunk record whose value has the ``digest`` its checkpoint names, or
    why not (``bad_signature``: another value; ``malformed``: not a chunk of that group,
    partition and number)."""
    if not isinstance(value, bytes):
        return Refused("malformed", f"chunk {chunk} has no value")
    if not hmac.compare_digest(chunk_digest(value), str(digest)):
        return Refused("bad_signature", f"chunk {chunk} does not match its checkpoint digest")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Refused("malformed", f"chunk {chunk} is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Refused("malformed", f"chunk {chunk} is a JSON {type(doc).__name__}")
    want = (CHUNK_FORMAT, CHUNK_VERSION, group, partition, chunk)
    got = tuple(doc.get(f) for f in ("format", "version", "group", "partition", "chunk"))
    if got != want or not isinstance(doc.get("contents"), dict):
        return Refused("malformed", f"chunk record is {got!r}, expected {want!r}")
    contents: dict[str, Any] = doc["contents"]
    return contents
