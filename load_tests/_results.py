"""Shared helpers of the load tests: machine description and RESULTS.md section updates."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

__all__ = [
    "RESULTS_MD",
    "add_results_args",
    "command_line",
    "machine_busy_cores_s",
    "machine_info",
    "results_head",
    "source_digest",
    "sources_changed",
    "update_section",
    "write_section",
]

#: The results file the scripts write by default.
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"

_HEADER = (
    "# Load test results\n\n"
    "Measured figures of the scripts in this folder. The sections between `<!-- name:begin -->`\n"
    "and `<!-- name:end -->` markers are rewritten by the script of that name on each run\n"
    "(unless it is given `--no-results`); text outside the markers is left alone.\n"
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def source_digest() -> str:
    """Short SHA-256 over the stream_monitor package's .py files (paths and contents), so that
    results can be matched to the code they measured without asking git."""
    import hashlib

    import stream_monitor

    root = Path(stream_monitor.__file__).resolve().parent
    h = hashlib.sha256()
    files = sorted(root.rglob("*.py"))
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return f"{h.hexdigest()[:12]} ({len(files)} files)"


def machine_info(kafka: str | None) -> str:
    """One line: cores, CPU, RAM, load, Python and library versions (and the broker's)."""
    import confluent_kafka

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [
        f"{os.cpu_count()} cores (nproc; {_cpu_model()})",
        f"RAM {_ram_gib()}",
        f"load avg at start {load}",
        f"Python {platform.python_version()}",
    ]
    if kafka:
        parts.append(f"Kafka {kafka}")
    parts += [
        f"river {_version('river')}",
        f"confluent-kafka {_version('confluent-kafka')} "
        f"(librdkafka {confluent_kafka.libversion()[0]})",
        f"pydantic {_version('pydantic')}",
        f"orjson {_version('orjson')}",
        f"stream_monitor source digest {source_digest()} at start",
    ]
    return "; ".join(parts)


def machine_busy_cores_s() -> float | None:
    """CPU-seconds all cores spent busy since boot (user+nice+system+irq+softirq+steal)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def update_section(path: Path, name: str, title: str, body: str) -> None:
    """Replace (or append) the marked section ``name`` of ``path``, keeping all other text."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n## {title}\n\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def add_results_args(ap: argparse.ArgumentParser) -> None:
    """``--results-file`` (RESULTS.md) and ``--no-results``."""
    ap.add_argument("--results-file", type=Path, default=RESULTS_MD)
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``script`` (for the results), as typed from the repository: each
    argument shell-quoted where it needs it (``--note`` takes a sentence), so it can be pasted."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([f".venv/bin/python load_tests/{script}", *map(shlex.quote, args)]).strip()


def results_head(machine: str, cmd: str, total_s: float | None = None) -> list[str]:
    """The first lines of a section: date and machine, then the command line (and the time it
    took, if given)."""
    took = "" if total_s is None else f" (total {total_s:.0f} s)"
    return [
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} — {machine}",
        "",
        f"Command: `{cmd}`{took}",
        "",
    ]


def sources_changed(digest: str) -> list[str]:
    """A note for the results if stream_monitor's sources no longer match ``digest`` (taken
    with source_digest() at the start of a run), else nothing."""
    now = source_digest()
    if now == digest:
        return []
    return [
        f"Note: stream_monitor's sources changed during the run (digest {digest} at start, "
        f"{now} at the end): monitors started after the change ran the new code."
    ]


def write_section(args: argparse.Namespace, name: str, title: str, md: Sequence[str]) -> None:
    """Replace the section ``name`` of ``--results-file`` with the lines ``md`` and say so on
    stdout, unless ``--no-results``."""
    if args.no_results:
        return
    update_section(Path(args.results_file), name, title, "\n".join(md))
    print(f"updated {args.results_file}")
