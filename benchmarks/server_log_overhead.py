"""Cost of capturing the server log: the robust example suite with the log on vs `--no-server-log`.

Each sample is a whole `db-test-action run --workers 2 -- examples/robust -q` (server start, template,
fresh database, pytest under xdist, server stop and the log copy into the results dir), so everything
the log costs is inside it: the logging collector process, jsonlog formatting of every record, the
extra settings (log_lock_waits, log_min_error_statement) and the copy. The two variants alternate
(on, off, on, off, …) so drift on this shared 2-core machine hits both alike; medians are compared.
Also printed: pytest's own session time (JUnit <testsuite time>) and the server log's size.
Target: < 5 % wall-time overhead.

Run: python benchmarks/server_log_overhead.py [repeats=7] [scale=5]   (scale: EXAMPLES_SCALE, tests × N)
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


def one(results: Path, server_log: bool, scale: int) -> tuple[float, float, int, int]:
    """(command wall s, pytest session s, errors + failures, server log bytes) of one whole run."""
    cmd = [sys.executable, "-m", "db_test_action", "run", "--results-dir", str(results), "--workers", "2"]
    cmd += [] if server_log else ["--no-server-log"]
    cmd += ["--pytest-output", "hide", "--", "examples/robust", "-q", "-p", "no:cacheprovider"]
    env = {**os.environ, "EXAMPLES_SCALE": str(scale)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    suite = DET.parse(results / "shard-1-run-1.xml").getroot().find("testsuite")
    bad = int(suite.get("errors")) + int(suite.get("failures"))
    logs = list(results.glob("server*.jsonl"))
    assert bool(logs) == server_log, logs
    return wall, float(suite.get("time")), bad, sum(p.stat().st_size for p in logs)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"examples/robust x{scale} ({58 * scale} tests), --workers 2, {repeats} alternating pairs")
    rows: dict[str, list[tuple[float, float, int, int]]] = {"log on": [], "log off": []}
    with tempfile.TemporaryDirectory() as tmp:
        one(Path(tmp) / "warm", True, scale)  # imports and page cache, not counted
        for k in range(repeats):
            first, second = ("log on", "log off") if k % 2 == 0 else ("log off", "log on")
            for name in (first, second):
                rows[name].append(one(Path(tmp) / f"{name.replace(' ', '-')}-{k}", name == "log on", scale))
    med = {}
    for name, samples in rows.items():
        wall = statistics.median(s[0] for s in samples)
        session = statistics.median(s[1] for s in samples)
        med[name] = (wall, session)
        spread = f"{min(s[0] for s in samples):.2f}–{max(s[0] for s in samples):.2f}"
        print(
            f"{name:8s} command wall median {wall:6.2f}s (range {spread})  pytest session {session:6.2f}s  "
            f"errors+failures {sum(s[2] for s in samples)}  server log {max(s[3] for s in samples) / 1024:.0f} KiB"
        )
    wall_ratio = med["log on"][0] / med["log off"][0]
    session_ratio = med["log on"][1] / med["log off"][1]
    verdict = "met" if wall_ratio < 1.05 else "NOT met"
    print(
        f"overhead: command wall {(wall_ratio - 1) * 100:+.1f}% (ratio {wall_ratio:.3f}), "
        f"pytest session {(session_ratio - 1) * 100:+.1f}% (ratio {session_ratio:.3f}); target < 5%: {verdict}"
    )


if __name__ == "__main__":
    main()
