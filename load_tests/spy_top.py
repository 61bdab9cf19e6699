"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) as Markdown tables.

    .venv/bin/python load_tests/spy_top.py PROFILE.txt [--top 25]

The profile comes from ``bench_throughput.py --monitor-profile PROFILE.txt`` (py-spy installed
in the venv by hand: ``.venv/bin/pip install py-spy``). Prints the share of samples spent in
each function itself (self) and in each function and its callees (inclusive), with file paths
relative to the project.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent) + "/"
_LINE = re.compile(r" \((.*?):\d+\)$")


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, samples per function (self) and per function with callees."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(r" (\1)", f).replace(ROOT, "") for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, own, inclusive


def markdown(total: int, own: Counter[str], inclusive: Counter[str], top: int) -> list[str]:
    out = [f"{total:,} samples.", "", "| self | function |", "|---:|---|"]
    out += [f"| {100 * n / total:.1f} % | `{f}` |" for f, n in own.most_common(top)]
    out += ["", "| inclusive | function |", "|---:|---|"]
    project = [(f, n) for f, n in inclusive.most_common() if "stream_monitor/" in f]
    out += [f"| {100 * n / total:.1f} % | `{f}` |" for f, n in project[:top]]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    print("\n".join(markdown(*summarise(args.profile), args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
