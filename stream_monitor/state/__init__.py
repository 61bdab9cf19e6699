"""Checkpoints of per-partition monitor state in a compacted Kafka changelog topic.

:mod:`~stream_monitor.state.envelope` encodes checkpoint records and decodes them (checking
shape, group, partition and, with a key, the signature; pure);
:mod:`~stream_monitor.state.changelog` creates the changelog topic and reads a partition's
latest record (Kafka I/O). A checkpoint's state is plain data; it is only ever restored from a
:class:`Snapshot` returned by :func:`decode_snapshot`, never from raw record data.
"""

from __future__ import annotations

from stream_monitor.state.changelog import (
    CHANGELOG_MAX_MESSAGE_BYTES,
    CHANGELOG_TOPIC_CONFIG,
    ChangelogError,
    ChangelogTimeout,
    Record,
    changelog_topic_name,
    ensure_changelog_topic,
    read_by_key,
    read_latest,
)
from stream_monitor.state.envelope import (
    ENVELOPE_VERSION,
    FORMAT,
    FORMAT_HEADER,
    MIN_SECRET_LENGTH,
    SIGNATURE_HEADER,
    RefusalReason,
    Refused,
    Snapshot,
    checkpoint_key,
    chunk_digest,
    chunk_key,
    chunk_of,
    decode_chunk,
    decode_snapshot,
    encode_chunk,
    encode_snapshot,
    key_from_secret,
)

__all__ = [
    "CHANGELOG_MAX_MESSAGE_BYTES",
    "CHANGELOG_TOPIC_CONFIG",
    "ENVELOPE_VERSION",
    "FORMAT",
    "FORMAT_HEADER",
    "MIN_SECRET_LENGTH",
    "SIGNATURE_HEADER",
    "ChangelogError",
    "ChangelogTimeout",
    "Record",
    "RefusalReason",
    "Refused",
    "Snapshot",
    "changelog_topic_name",
    "checkpoint_key",
    "chunk_digest",
    "chunk_key",
    "chunk_of",
    "decode_chunk",
    "decode_snapshot",
    "encode_chunk",
    "encode_snapshot",
    "ensure_changelog_topic",
    "key_from_secret",
    "read_by_key",
    "read_latest",
]
