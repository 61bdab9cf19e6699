"""The signed checkpoint envelope: round trips, every refusal reason, and no unpickling ever."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import pickle
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_monitor.state import envelope
from stream_monitor.state.envelope import (
    ENVELOPE_VERSION,
    FORMAT,
    Refused,
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    key_from_secret,
)

KEY = key_from_secret("unit-test-secret-0123456789abcdef")
OTHER_KEY = key_from_secret("another-secret-fedcba9876543210-0")

Headers = list[tuple[str, bytes | None]]


def _snap(partition: int = 0, **state: Any) -> Snapshot:
    return Snapshot(
        partition=partition,
        offsets={"predictions": 1234, "labels": 56},
        state={"v": 1, "partition": partition, **state},
        created_at=1_700_000_000.25,
        group="monitor-group",
        sequence=41,
    )


def _sign(record_key: bytes, value: bytes, key: bytes = KEY) -> Headers:
    """Sign arbitrary bytes exactly as the envelope specifies (pins the MAC construction)."""
    mac = hmac.new(
        key,
        b"stream-monitor-checkpoint-hmac\x00" + len(record_key).to_bytes(8, "big") + record_key,
        hashlib.sha256,
    )
    mac.update(value)
    return [("x-hmac-sha256", mac.hexdigest().encode())]


def _doc(partition: int = 0, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": 2,
        "group": "monitor-group",
        "partition": partition,
        "sequence": 0,
        "offsets": {"predictions": 1},
        "created_at": 1.5,
        "state": {},
    }
    doc.update(overrides)
    return doc


def _decode(rkey: bytes | None, value: bytes | None, headers: Any, **kw: Any) -> Any:
    kw.setdefault("expected_partition", 0)
    return decode_snapshot(rkey, value, headers, KEY, **kw)


def _refused(result: object, reason: str) -> Refused:
    assert isinstance(result, Refused), result
    assert result.reason == reason, result
    assert result.detail
    return result


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_nested_unicode_and_floats() -> None:
    state = {
        "models": [
            {
                "model_id": "modèle-β/😀",
                "hist": [0.1, 1e-300, -2.5e300, 0.30000000000000004, 0],
                "nested": {"a": {"b": [None, True, False, "ünïcödé"]}},
            }
        ],
        "big": 2**62,
        "empty": {},
    }
    snap = Snapshot(
        partition=7, offsets={"prédictions": 10, "labels": 0}, state=state, created_at=12.125
    )
    rkey, value, headers = encode_snapshot(snap, KEY)
    decoded = decode_snapshot(rkey, value, headers, KEY, expected_partition=7)
    assert decoded == snap
    assert isinstance(decoded, Snapshot)
    assert decoded.version == ENVELOPE_VERSION
    assert decoded.state["models"][0]["hist"][3] == 0.30000000000000004


def test_record_layout() -> None:
    rkey, value, headers = encode_snapshot(_snap(3), KEY)
    assert rkey == b"3"
    assert orjson.loads(value) == {
        "format": "stream-monitor-checkpoint",
        "version": 2,
        "group": "monitor-group",
        "partition": 3,
        "sequence": 41,
        "offsets": {"predictions": 1234, "labels": 56},
        "created_at": 1_700_000_000.25,
        "state": {"v": 1, "partition": 3},
    }
    assert headers[0] == ("x-checkpoint-format", b"stream-monitor-checkpoint/2")
    assert headers[1][0] == "x-hmac-sha256"
    assert headers[1:] == _sign(rkey, value)  # the documented MAC construction


def test_integer_created_at_comes_back_as_float() -> None:
    rkey = b"0"
    value = orjson.dumps(_doc(created_at=5))
    decoded = _decode(rkey, value, _sign(rkey, value))
    assert isinstance(decoded, Snapshot)
    assert decoded.created_at == 5.0
    assert isinstance(decoded.created_at, float)


def test_headers_of_other_names_are_ignored() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    noisy = [("trace-id", b"abc"), ("x-other", None), *headers]
    assert _decode(rkey, value, noisy) == _snap(0)


def test_another_supported_version_is_accepted() -> None:
    snap = Snapshot(0, {"t": 1}, {}, 0.0, version=2)
    rkey, value, headers = encode_snapshot(snap, KEY)
    assert headers[0] == ("x-checkpoint-format", b"stream-monitor-checkpoint/2")
    assert _decode(rkey, value, headers, supported_versions=frozenset({1, 2})) == snap


# --- unsigned ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("x-checkpoint-format", b"stream-monitor-checkpoint/1")],
        [("x-hmac-sha256", None)],
    ],
    ids=["none", "empty", "format-only", "null-mac"],
)
def test_no_signature_header_is_unsigned(headers: Any) -> None:
    rkey, value, _ = encode_snapshot(_snap(0), KEY)
    _refused(_decode(rkey, value, headers), "unsigned")


def test_unsigned_tombstone() -> None:
    r = _refused(_decode(b"0", None, None), "unsigned")
    assert "tombstone" in r.detail


# --- bad signature -----------------------------------------------------------------------------


def test_flipped_byte_in_value() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    for i in (0, len(value) // 2, len(value) - 1):
        tampered = bytearray(value)
        tampered[i] ^= 0x01
        _refused(_decode(rkey, bytes(tampered), headers), "bad_signature")


def test_flipped_byte_in_mac() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    name, mac = headers[1]
    assert mac is not None
    for i in (0, 31, 63):
        tampered = bytearray(mac)
        tampered[i] = ord("0") if tampered[i] != ord("0") else ord("1")
        _refused(_decode(rkey, value, [headers[0], (name, bytes(tampered))]), "bad_signature")


def test_truncated_upper_case_and_non_hex_macs() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    mac = headers[1][1]
    assert mac is not None
    for bad in (mac[:-1], mac.upper(), b"", b"\xff" * 64, mac + b"0"):
        _refused(_decode(rkey, value, [("x-hmac-sha256", bad)]), "bad_signature")


def test_wrong_key() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), OTHER_KEY)
    _refused(_decode(rkey, value, headers), "bad_signature")


def test_value_of_partition_1_replayed_under_record_key_0() -> None:
    """The MAC covers the record key: a genuine checkpoint cannot be moved to another key."""
    _, value, headers = encode_snapshot(_snap(1), KEY)
    _refused(_decode(b"0", value, headers, expected_partition=0), "bad_signature")


def test_signed_tombstone_mac_of_other_record_and_missing_key() -> None:
    rkey, _, headers = encode_snapshot(_snap(0), KEY)
    _refused(_decode(rkey, None, headers), "bad_signature")
    _, value, headers = encode_snapshot(_snap(0), KEY)
    _refused(_decode(None, value, headers), "bad_signature")


def test_duplicate_signature_headers_are_refused() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    _refused(_decode(rkey, value, [*headers, headers[1]]), "bad_signature")


# --- malformed (signed with the right key, but not a checkpoint) -------------------------------


def _signed(value: bytes, rkey: bytes = b"0") -> Any:
    return _decode(rkey, value, _sign(rkey, value))


def test_not_json() -> None:
    _refused(_signed(b"\x80\x04not json at all"), "malformed")
    _refused(_signed(b""), "malformed")


def test_json_list() -> None:
    _refused(_signed(orjson.dumps([_doc()])), "malformed")


def test_signed_empty_value_is_malformed() -> None:
    _refused(_decode(b"0", None, _sign(b"0", b"")), "malformed")


@pytest.mark.parametrize(
    "field", ["format", "group", "partition", "sequence", "offsets", "created_at", "state"]
)
def test_missing_field(field: str) -> None:
    doc = _doc()
    del doc[field]
    _refused(_signed(orjson.dumps(doc)), "malformed")


def test_missing_version_is_malformed() -> None:
    doc = _doc()
    del doc["version"]
    _refused(_signed(orjson.dumps(doc)), "malformed")


@pytest.mark.parametrize(
    "overrides",
    [
        {"format": "something-else"},
        {"format": None},
        {"version": "1"},
        {"version": True},
        {"version": 1.0},
        {"partition": "0"},
        {"partition": False},
        {"partition": -1},
        {"partition": 0.0},
        {"group": None},
        {"group": 7},
        {"sequence": -1},
        {"sequence": "3"},
        {"sequence": 1.0},
        {"offsets": [1, 2]},
        {"offsets": {"predictions": "1"}},
        {"offsets": {"predictions": -5}},
        {"offsets": {"predictions": True}},
        {"offsets": {"predictions": 1.0}},
        {"created_at": "yesterday"},
        {"created_at": None},
        {"created_at": True},
        {"state": []},
        {"state": "pickle"},
        {"state": None},
    ],
    ids=repr,
)
def test_wrong_types(overrides: dict[str, Any]) -> None:
    _refused(_signed(orjson.dumps(_doc(**overrides))), "malformed")


# --- unsupported version -----------------------------------------------------------------------


def test_envelope_version_1_is_no_longer_read() -> None:
    rkey, value, headers = encode_snapshot(Snapshot(0, {}, {}, 0.0, version=1), KEY)
    r = _refused(_decode(rkey, value, headers), "unsupported_version")
    assert "1" in r.detail and "[2]" in r.detail


def test_version_is_checked_before_the_rest_of_the_shape() -> None:
    """A future version may have another shape: it is reported as unsupported, not malformed."""
    value = orjson.dumps({"format": FORMAT, "version": 3, "payload": "new layout"})  # no group
    r = _refused(_signed(value), "unsupported_version")
    assert "3" in r.detail


# --- wrong partition ---------------------------------------------------------------------------


def test_record_key_1_expected_partition_0() -> None:
    rkey, value, headers = encode_snapshot(_snap(1), KEY)
    assert rkey == b"1"
    _refused(_decode(rkey, value, headers, expected_partition=0), "wrong_partition")


def test_signed_envelope_field_disagrees_with_record_key() -> None:
    value = orjson.dumps(_doc(partition=1))
    r = _refused(_decode(b"0", value, _sign(b"0", value)), "wrong_partition")
    assert "1" in r.detail


@pytest.mark.parametrize("rkey", [b"00", b" 0", b"0\x00", b"", b"zero"])
def test_non_canonical_record_key(rkey: bytes) -> None:
    value = orjson.dumps(_doc(partition=0))
    _refused(_decode(rkey, value, _sign(rkey, value)), "wrong_partition")


# --- robustness --------------------------------------------------------------------------------


def test_never_raises_on_garbage() -> None:
    rng = random.Random(1234)
    genuine = encode_snapshot(_snap(0), KEY)
    weird_headers: list[Any] = [
        None,
        [],
        [("x-hmac-sha256", "a-str-not-bytes")],
        [("x-hmac-sha256",)],
        [("x-hmac-sha256", b"0" * 64, b"extra")],
        ["not-a-tuple"],
        [(None, None)],
        genuine[2],
    ]
    for _ in range(500):
        rkey = rng.choice([None, b"0", b"1", bytes(rng.randrange(256) for _ in range(3))])
        value = rng.choice(
            [None, genuine[1], bytes(rng.randrange(256) for _ in range(rng.randrange(50)))]
        )
        result = _decode(rkey, value, rng.choice(weird_headers))
        assert isinstance(result, Snapshot | Refused)
        if isinstance(result, Snapshot):
            assert (rkey, value) == genuine[:2]


def test_encode_refuses_what_decode_would_refuse() -> None:
    for bad in (
        Snapshot(-1, {}, {}, 0.0),
        Snapshot(0, {"t": -1}, {}, 0.0),
        Snapshot(0, {}, {}, float("nan")),
        Snapshot(0, {}, {}, 0.0, version=True),
    ):
        with pytest.raises(ValueError):
            encode_snapshot(bad, KEY)
    with pytest.raises(TypeError):
        encode_snapshot(Snapshot(0, {}, {"s": {1, 2}}, 0.0), KEY)


def test_empty_hmac_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        encode_snapshot(_snap(0), b"")
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    with pytest.raises(ValueError):
        decode_snapshot(rkey, value, headers, b"", expected_partition=0)


# --- key_from_secret ---------------------------------------------------------------------------


def test_key_from_secret() -> None:
    assert key_from_secret("x" * 32) == b"x" * 32
    secret = "clé-secrète-très-longue, deux fois"  # 34 characters, 38 bytes
    assert key_from_secret(secret) == secret.encode()
    with pytest.raises(ValueError, match="empty"):
        key_from_secret("")
    with pytest.raises(ValueError, match="32 bytes"):
        key_from_secret("x" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        key_from_secret("é" * 15)  # 15 characters, 30 bytes


# --- forged pickles are never loaded -----------------------------------------------------------


class _Payload:
    """Unpickling this creates ``path`` (stands in for arbitrary code execution)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _malicious_state(path: Path) -> dict[str, Any]:
    blob = base64.b64encode(pickle.dumps(_Payload(path))).decode("ascii")
    detector = {"v": 1, "kind": "adwin", "params": {}, "state": blob}
    return {"v": 1, "partition": 0, "models": [{"model_id": "m", "detectors": [detector]}]}


def test_the_malicious_payload_works(tmp_path: Path) -> None:
    """Control: unpickling the payload really does create the file, so the test below would
    notice if anything unpickled it."""
    canary = tmp_path / "control"
    blob = _malicious_state(canary)["models"][0]["detectors"][0]["state"]
    pickle.loads(base64.b64decode(blob))
    assert canary.exists()


def test_forged_snapshot_with_malicious_pickle_is_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = tmp_path / "pwned"
    forged = Snapshot(0, {"predictions": 0}, _malicious_state(canary), 0.0)
    rkey, value, headers = encode_snapshot(forged, OTHER_KEY)  # the attacker's secret

    def tripwire(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "loads", tripwire)
    monkeypatch.setattr(pickle, "load", tripwire)
    result = decode_snapshot(rkey, value, headers, KEY, expected_partition=0)
    assert isinstance(result, Refused)
    assert result.reason == "bad_signature"
    assert not canary.exists()
    # Unsigned, it is refused just the same.
    _refused(decode_snapshot(rkey, value, [], KEY, expected_partition=0), "unsigned")
    assert not canary.exists()


def test_decode_never_unpickles_even_a_genuine_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restoring state is the caller's business: decode returns the base64 text untouched."""
    canary = tmp_path / "pwned"
    snap = Snapshot(0, {"predictions": 0}, _malicious_state(canary), 0.0)
    rkey, value, headers = encode_snapshot(snap, KEY)

    def tripwire(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "loads", tripwire)
    assert decode_snapshot(rkey, value, headers, KEY, expected_partition=0) == snap
    assert not canary.exists()


def test_envelope_module_imports_no_deserialiser_of_code() -> None:
    tree = ast.parse(Path(envelope.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported.isdisjoint({"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"})
    assert "orjson" in imported


# --- unsigned checkpoints, the group, the sequence ---------------------------------------------


def test_without_a_key_a_record_is_unsigned_and_reads_back() -> None:
    rkey, value, headers = encode_snapshot(_snap(2), None)
    assert [name for name, _ in headers] == ["x-checkpoint-format"]
    decoded = decode_snapshot(rkey, value, headers, None, expected_partition=2)
    assert decoded == _snap(2)


def test_with_a_key_an_unsigned_record_is_refused() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), None)
    _refused(_decode(rkey, value, headers), "unsigned")


def test_without_a_key_a_signature_is_not_needed_nor_checked() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), OTHER_KEY)
    assert decode_snapshot(rkey, value, headers, None, expected_partition=0) == _snap(0)


def test_without_a_key_the_shape_is_still_checked() -> None:
    _refused(decode_snapshot(b"0", b"{not json", [], None, expected_partition=0), "malformed")
    value = orjson.dumps(_doc(partition=1))
    _refused(decode_snapshot(b"0", value, [], None, expected_partition=0), "wrong_partition")
    _refused(decode_snapshot(b"0", None, [], None, expected_partition=0), "malformed")


def test_a_checkpoint_of_another_group_is_refused() -> None:
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    ok = _decode(rkey, value, headers, expected_group="monitor-group")
    assert isinstance(ok, Snapshot) and ok.group == "monitor-group" and ok.sequence == 41
    r = _refused(_decode(rkey, value, headers, expected_group="other"), "wrong_group")
    assert "monitor-group" in r.detail


def test_the_group_and_sequence_are_signed() -> None:
    """Moving a genuine checkpoint to another group's changelog, or renumbering it, breaks the
    signature: both fields are inside the MAC."""
    rkey, value, headers = encode_snapshot(_snap(0), KEY)
    for old, new in (
        (b'"monitor-group"', b'"other-group!!"'),
        (b'"sequence":41', b'"sequence":99'),
    ):
        assert old in value
        _refused(_decode(rkey, value.replace(old, new), headers), "bad_signature")
