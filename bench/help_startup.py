"""How fast `wsctl --help` starts, as a ratio to a bare `python -c pass` measured in the same run.

Run: python bench/help_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    floor = median_seconds([sys.executable, "-c", "pass"], args.runs)
    help_time = median_seconds([sys.executable, "-m", "wsctl", "--help"], args.runs)
    heavy = median_seconds(
        [sys.executable, "-c", "import redis.asyncio, websockets.asyncio.server, rich.table"],
        args.runs,
    )
    print(f"python -c pass            {floor * 1000:7.1f} ms (floor)")
    print(f"wsctl --help              {help_time * 1000:7.1f} ms  ratio {help_time / floor:5.2f}x")
    print(f"import redis+ws+rich only {heavy * 1000:7.1f} ms  ratio {heavy / floor:5.2f}x")
    print(f"help_ratio={help_time / floor:.2f}")


if __name__ == "__main__":
    main()
