"""Shared helpers of the load tests: machine description and RESULTS.md section updates."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

__all__ = ["machine_busy_cores_s", "machine_info", "source_digest", "update_section"]

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
