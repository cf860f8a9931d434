"""``make bench``: run every benchmark module and print its result lines."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

MODULES = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    selected = [m for m in MODULES if not argv or any(a in m for a in argv)]
    for name in selected:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        for line in module.run():
            print("  " + line, flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
