"""What the pytest11 entry point costs every pytest start, on top of pytest itself.

`python -X importtime -c "import pytest; import db_test_action.plugin"` in a fresh interpreter: pytest is
imported first, so the entry point's cumulative line is exactly what it adds (our modules and whatever
they pull in that pytest did not). Compared with the database half (`db_test_action.plugin.db`: psycopg,
the template and reset helpers), which loads only under `--db-per-worker`. Best of N runs.

Target (architecture issue): < 20 ms without a `--db-*` option. Run:
    python benchmarks/plugin_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def cumulative_us(module: str) -> int:
    """Microseconds `import module` costs after `import pytest`, from -X importtime's cumulative column."""
    code = f"import pytest; import {module}"
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    ).stderr
    total = 0
    for line in err.splitlines():
        parts = line.split("|")
        # our top-level lines (nested ones are inside their cumulative figure); pytest's were imported first
        if len(parts) == 3 and parts[1].strip().isdigit() and parts[2].startswith(" db_test_action"):
            total += int(parts[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    light = min(cumulative_us("db_test_action.plugin") for _ in range(runs))
    heavy = min(cumulative_us("db_test_action.plugin.db") for _ in range(runs))
    print(
        f"entry point (db_test_action.plugin), on top of pytest:     {light / 1000:7.1f} ms  (target < 20 ms)"
    )
    print(f"database half (db_test_action.plugin.db), on top of pytest: {heavy / 1000:7.1f} ms")
    print(f"entry point / database half: {light / max(heavy, 1):.3f}")


if __name__ == "__main__":
    main()
