"""Cost of the statement log (collision partners, the fixture doctor) and of the doctor's fixture spans.

Three variants of the same whole `db-test-action run --workers 2 -- examples/robust -q`, alternating
(rotated each round) so drift on this shared 2-core machine hits all alike; medians are compared:

- `none`:   `--log-statements none` — errors and lock waits only (the log before this feature);
- `mod`:    the default — DDL and data-modifying statements with their parameters, connections and
            disconnections (`log_statement = mod`, `log_connections`, `log_disconnections`);
- `doctor`: `mod` plus the plugin recording every test's fixture spans (`DB_TEST_ACTION_PLUGIN_FIXTURES`),
            what `db-test-action doctor` runs (serially there; here under the same xdist run for a like
            comparison).

Printed: command wall time, pytest's session time and the server log's size per variant, and the
ratios against `none`. Target: `mod` < 5 % wall-time overhead.

Run: python benchmarks/statement_log_overhead.py [repeats=5] [scale=5]   (scale: EXAMPLES_SCALE, tests × N)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import defusedxml.ElementTree as DET

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("none", "mod", "doctor")


def one(results: Path, variant: str, scale: int) -> tuple[float, float, int]:
    """(command wall s, pytest session s, server log bytes) of one whole run."""
    level = "none" if variant == "none" else "mod"
    cmd = [sys.executable, "-m", "db_test_action", "run", "--results-dir", str(results), "--workers", "2",
           "--log-statements", level, "--pytest-output", "hide", "--", "examples/robust", "-q",
           "-p", "no:cacheprovider"]  # fmt: skip
    env = {**os.environ, "EXAMPLES_SCALE": str(scale)}
    if variant == "doctor":
        env["DB_TEST_ACTION_PLUGIN_FIXTURES"] = "1"
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    suite = DET.parse(results / "shard-1-run-1.xml").getroot().find("testsuite")
    size = sum(p.stat().st_size for p in results.glob("server*.jsonl"))
    return wall, float(suite.get("time")), size


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"examples/robust x{scale} ({58 * scale} tests), --workers 2, {repeats} rotated rounds")
    rows: dict[str, list[tuple[float, float, int]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        one(Path(tmp) / "warm", "mod", scale)  # imports and page cache, not counted
        for k in range(repeats):
            order = VARIANTS[k % 3 :] + VARIANTS[: k % 3]
            for variant in order:
                rows[variant].append(one(Path(tmp) / f"{variant}-{k}", variant, scale))
    med = {
        v: (statistics.median(s[0] for s in r), statistics.median(s[1] for s in r)) for v, r in rows.items()
    }
    for variant, samples in rows.items():
        spread = f"{min(s[0] for s in samples):.2f}–{max(s[0] for s in samples):.2f}"
        print(
            f"{variant:7s} command wall median {med[variant][0]:6.2f}s (range {spread})  pytest session "
            f"{med[variant][1]:6.2f}s  server log {max(s[2] for s in samples) / 1024:.0f} KiB"
        )
    for variant in ("mod", "doctor"):
        wall = med[variant][0] / med["none"][0]
        session = med[variant][1] / med["none"][1]
        print(
            f"{variant} vs none: command wall {(wall - 1) * 100:+.1f}% (ratio {wall:.3f}), "
            f"pytest session {(session - 1) * 100:+.1f}% (ratio {session:.3f})"
        )
    ratio = med["mod"][0] / med["none"][0]
    print(f"target: statement log < 5% wall-time overhead: {'met' if ratio < 1.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
