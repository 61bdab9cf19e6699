"""The command line's surface: global options anywhere, clean usage errors, ``--version``,
help texts with an example each, and ``profile``'s progress on large inputs."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from stream_monitor import cli

COMMANDS = ["run", "simulate", "alerts", "forward", "profile", "replay"]


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "--log-format", "json", "run"],
        ["run", "--log-level", "debug", "--log-format", "json"],
        ["--log-level", "debug", "run", "--log-format", "json"],
        ["--log-format", "text", "run", "--log-level", "DEBUG", "--log-format", "json"],
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert (args.command, args.log_level, args.log_format) == ("run", "DEBUG", "json")


def test_an_option_before_the_command_is_kept_when_not_repeated_after_it() -> None:
    args = cli.parse_args(["--log-level", "error", "replay", "--predictions", "p", "--out", "o"])
    assert args.log_level == "ERROR" and args.log_format == "text"


def test_config_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args(["--config", "m.toml", "run"]).config == "m.toml"
    assert cli.parse_args(["run", "--config", "m.toml"]).config == "m.toml"
    assert cli.parse_args(["--config", "m.toml", "run", "--config", "m.toml"]).config == "m.toml"
    assert cli.parse_args(["run"]).config is None
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--config", "a.toml", "run", "--config", "b.toml"])
    assert exc.value.code == 2
    assert "given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--config", "a.toml", "profile", "train.csv", "--model-id", "m"])
    assert exc.value.code == 2
    assert "profile reads no configuration file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "LOUD", "run"],
        ["run", "--log-level", "loud"],
        ["--log-format", "xml", "run"],
    ],
)
def test_a_bad_log_option_is_a_usage_error_not_a_traceback(argv: list[str]) -> None:
    proc = _cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: stream-monitor")
    assert "error: argument --log-" in proc.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAM_MONITOR_LOG_LEVEL", "chatty", "invalid log level 'chatty'"),
        ("STREAM_MONITOR_LOG_FORMAT", "xml", "invalid log format 'xml'"),
    ],
)
def test_a_bad_log_option_in_the_environment_is_a_usage_error_too(
    name: str, value: str, says: str
) -> None:
    import os

    proc = _cli("run", env={**os.environ, name: value})
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_version_prints_the_installed_distribution_version() -> None:
    proc = _cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"stream-monitor {metadata.version(cli.DISTRIBUTION)}"
    assert cli.package_version() == metadata.version(cli.DISTRIBUTION)


def test_the_distribution_name_matches_pyproject() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == cli.DISTRIBUTION != "stream-monitor"
    assert project["scripts"]["stream-monitor"] == "stream_monitor.cli:main"
    assert metadata.metadata(cli.DISTRIBUTION)["Name"] == cli.DISTRIBUTION


def test_help_has_no_internal_notes_and_every_command_an_example() -> None:
    parser = cli.build_parser()
    top = parser.format_help()
    assert "The only place" not in top and "configures logging handlers" not in top
    assert "--version" in top and "--log-format" in top
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None and set(COMMANDS) <= set(commands)
    for name, sub in commands.items():  # every command, those added later too
        text = sub.format_help()
        examples = [ln for ln in text.splitlines() if ln.startswith("example: ")]
        assert len(examples) == 1, (name, text)
        assert f"stream-monitor {name} " in examples[0]
        assert "--log-level" in text and "--log-format" in text
        # the example parses (files need not exist to parse)
        example_argv = examples[0].split("stream-monitor ", 1)[1].split()
        assert cli.parse_args(example_argv).command == name


def _train_csv(path: Path, rows: int) -> Path:
    path.write_text("x,c\n" + "".join(f"{i % 97 / 10},{'ab'[i % 2]}\n" for i in range(rows)))
    return path


def test_profile_shows_progress_every_n_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _train_csv(tmp_path / "train.csv", 5000)
    out = tmp_path / "m.profile.json"
    argv = ["profile", str(csv), "--model-id", "m", "-o", str(out), "--progress-rows", "1000"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    progress = [ln for ln in err if ln.startswith("profile: ")]
    assert [ln.split(" rows")[0] for ln in progress] == [
        "profile: 1,000",
        "profile: 2,000",
        "profile: 3,000",
        "profile: 4,000",
        "profile: 5,000",
        "profile: 5,000",  # the final line
    ]
    assert progress[-1].startswith("profile: 5,000 rows read in ")
    assert out.is_file()


def test_profile_progress_is_bounded_and_can_be_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _train_csv(tmp_path / "train.csv", 3000)
    base = ["profile", str(csv), "--model-id", "m", "-o", str(tmp_path / "p.json")]
    assert cli.main([*base, "--progress-rows", "0"]) == 0
    assert "profile: " not in capsys.readouterr().err
    assert cli.main(base) == 0  # the default: a line per million rows, none here
    assert "profile: " not in capsys.readouterr().err


def test_row_progress_also_reports_by_time_on_a_slow_input() -> None:
    import io

    now = [0.0]

    def clock() -> float:  # read once per 4,096 rows (and per line): 11 s later each time
        now[0] += 11.0
        return now[0]

    out = io.StringIO()
    p = cli.RowProgress(out, every_rows=10**9, every_seconds=10.0, clock=clock)
    assert sum(1 for _ in p.count(iter(range(3 * 4096)))) == 3 * 4096
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one per 4,096-row check: 10 s had passed each time
    assert lines[0].startswith("profile: 4,096 rows read")
