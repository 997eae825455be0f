"""Where a profiled component's samples went: py-spy's raw stacks summed by process and function.

``BENCH_PROFILE=DIR`` makes the scheduler benchmark record py-spy's raw (collapsed) stacks of
the scheduler and the triggerer; this prints, for each file, the samples of each process and the
functions that hold the most samples inclusively, which is how `benchmarks/results.md` reports a
profile's breakdown. ``python -m benchmarks.profile_shares FILE [--top N] [--match TEXT]``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``function (path/to/module.py:12)`` as ``module.py:function``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()[:80]
    return f"{Path(match['file']).name}:{match['func']}"


def shares(path: Path, top: int, match: str | None) -> str:
    """The per-process totals and the top inclusive functions of one raw py-spy file."""
    by_process: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # py-spy names the processes it followed (--subprocesses), not the one it was given.
        process = frames[0][:70] if frames[0].startswith("process ") else "the recorded process"
        by_process[process] += count
        seen = {_name(f) for f in frames[1:]}
        bucket = inclusive.setdefault(process, Counter())
        for name in seen:
            if match is None or match in name:
                bucket[name] += count
    lines = [f"# {path.name}"]
    for process, total in by_process.most_common():
        lines.append(f"{total:7d}  {process}")
        for name, count in inclusive[process].most_common(top):
            lines.append(f"         {count:7d} {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only functions whose name contains this")
    args = parser.parse_args()
    for path in args.files:
        print(shares(path, args.top, args.match))


if __name__ == "__main__":
    main()
