"""``stream-monitor replay`` for a newcomer's first file: a failing exit status when most records
are invalid, the reasons with their hints, and every invalid record in ``dead_letters.jsonl``."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from stream_monitor import cli
from stream_monitor.backtest import DeadLetterLog, hint

T0 = 1_700_000_000


def _prediction(i: int, ts: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{i}",
            "model_id": "fraud",
            "timestamp": ts,
            "features": {"amount": float(i % 50)},
            "prediction": 0.5,
        }
    )


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_millisecond_timestamps_fail_with_the_hint_and_every_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [_prediction(i, T0 + i) for i in range(40)]
    millis = [_prediction(i, (T0 + i) * 1000) for i in range(40, 100)]
    binary = b"\xff\xfe not json"
    lines = good[:20] + millis[:30] + [binary] + good[20:] + millis[30:]
    src = _write(tmp_path / "predictions.jsonl", lines)
    out = tmp_path / "out"
    code = cli.main(["replay", "--predictions", str(src), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "timestamp must be Unix seconds (did you send milliseconds?)" in captured.out
    assert "hint: timestamps look like milliseconds" in captured.out
    assert "hint: not one JSON object per line" in captured.out
    assert "60.4% of the records read were invalid" in captured.err
    assert "--max-invalid-share 0.5" in captured.err
    dead = [orjson.loads(x) for x in (out / "dead_letters.jsonl").read_bytes().splitlines()]
    assert len(dead) == 61  # every bad record, once
    bad_offsets = {i for i, line in enumerate(lines) if line in millis or line == binary}
    assert {d["offset"] for d in dead} == bad_offsets
    for d in dead:
        original = lines[d["offset"]]
        if original == binary:
            assert d["reason"] == "decode_error" and "value" not in d
            assert base64.b64decode(d["value_base64"]) == binary
        else:
            assert d["reason"] == "validation_error" and d["kind"] == "prediction"
            assert "milliseconds" in d["detail"]
            assert d["value"].encode() == original  # the original bytes, as text
    assert "dead_letters.jsonl (61 invalid records" in captured.out


def test_a_few_invalid_records_pass_and_the_share_is_configurable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_prediction(i, T0 + i) for i in range(90)] + [b"{}"] * 10
    src = _write(tmp_path / "p.jsonl", lines)
    base = ["replay", "--predictions", str(src), "--out", str(tmp_path / "o")]
    assert cli.main(base) == 0  # 10 % invalid, under the default 0.5
    out = capsys.readouterr().out
    assert "hint: the record does not follow the wire contract" in out
    assert len((tmp_path / "o" / "dead_letters.jsonl").read_bytes().splitlines()) == 10
    assert cli.main([*base, "--max-invalid-share", "0.05"]) == 1
    assert "10.0% of the records read were invalid" in capsys.readouterr().err
    assert cli.main([*base, "--max-invalid-share", "1"]) == 0


def test_a_clean_replay_writes_an_empty_dead_letter_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(tmp_path / "p.jsonl", [_prediction(i, T0 + i) for i in range(50)])
    assert cli.main(["replay", "--predictions", str(src), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "dead_letters.jsonl").read_bytes() == b""
    out = capsys.readouterr().out
    assert "hint:" not in out and "dead letters" not in out


@pytest.mark.parametrize("share", ["-0.1", "1.5", "half"])
def test_a_bad_share_is_a_usage_error(share: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["replay", "--predictions", "p", "--out", "o", "--max-invalid-share", share])
    assert exc.value.code == 2
    assert "--max-invalid-share" in capsys.readouterr().err


def test_labels_given_as_predictions_get_their_own_hint() -> None:
    detail = "features: Field required; prediction: Field required"
    assert "labels file" in str(hint("validation_error", detail))
    assert "predictions file" in str(hint("validation_error", "label: Field required"))
    assert hint("nonsense", "") is None


def test_the_details_kept_per_reason_are_bounded() -> None:
    from stream_monitor.backtest.dead_letters import MAX_DETAILS
    from stream_monitor.events.decode import DeadLetter

    log = DeadLetterLog()  # counts only, writes nothing
    for i in range(1000):
        dl = DeadLetter("decode_error", f"detail {i % 100}", "t", 0, i, None, b"x", (), -1)
        log.add("prediction", dl)
    counts = log.details[("prediction", "decode_error")]
    assert len(counts) == MAX_DETAILS + 1 and sum(counts.values()) == 1000
    assert log.written == 0
