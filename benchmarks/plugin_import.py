"""What the pytest11 entry point costs every pytest start: `import pytest` alone vs `import pytest,
db_test_action.plugin`, each timed by `python -X importtime` in a fresh interpreter, best of N.

Target (architecture issue): < 20 ms on top of pytest without a `--db-*` option. Run:
    python benchmarks/plugin_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def import_us(code: str) -> int:
    """Cumulative microseconds of the top-level imports in `code`, from -X importtime."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    ).stderr
    total = 0
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  "):  # top-level (not nested) imports
            total += int(parts[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    base = min(import_us("import pytest") for _ in range(runs))
    both = min(import_us("import pytest, db_test_action.plugin") for _ in range(runs))
    heavy = min(import_us("import pytest, db_test_action.plugin.db") for _ in range(runs))
    print(f"import pytest                          {base / 1000:8.1f} ms")
    print(f"import pytest + the entry point        {both / 1000:8.1f} ms  (+{(both - base) / 1000:.1f} ms)")
    print(f"import pytest + the database half      {heavy / 1000:8.1f} ms  (+{(heavy - base) / 1000:.1f} ms)")
    print(f"entry point / database half, on top of pytest: {(both - base) / max(heavy - base, 1):.2f}")


if __name__ == "__main__":
    main()
