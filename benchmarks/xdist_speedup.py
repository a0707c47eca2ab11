"""xdist speed-up of the robust example suite: serial vs `--workers 2`, each a whole `db-test-action run`.

Reports pytest's own session time (JUnit <testsuite time>) and the whole command's wall time, their
ratios, and errors + failures (must be zero). As written the suite takes ~0.5 s serially — less than
xdist needs to start two workers — so the benchmark also runs it scaled (EXAMPLES_SCALE=N: every test N
times), where the fixed start-up amortises.
Run: python benchmarks/xdist_speedup.py [repeats=3] [scale=20]
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


def one(results: Path, workers: str | None, scale: int) -> tuple[float, float, int]:
    args = ["--workers", workers] if workers else []
    cmd = [sys.executable, "-m", "db_test_action", "run", "--results-dir", str(results), *args]
    cmd += ["--", "examples/robust", "-q"]
    start = time.perf_counter()
    env = {**os.environ, "EXAMPLES_SCALE": str(scale)}
    subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, env=env)
    wall = time.perf_counter() - start
    suite = DET.parse(results / "shard-1-run-1.xml").getroot().find("testsuite")
    return wall, float(suite.get("time")), int(suite.get("errors")) + int(suite.get("failures"))


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for scale in (1, int(sys.argv[2]) if len(sys.argv) > 2 else 20):
        print(f"examples/robust x{scale} ({58 * scale} tests):")
        report(repeats, scale)


def report(repeats: int, scale: int) -> None:
    rows: dict[str, list[tuple[float, float, int]]] = {"serial": [], "workers 2": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            rows["serial"].append(one(Path(tmp) / f"s{k}", None, scale))
            rows["workers 2"].append(one(Path(tmp) / f"w{k}", "2", scale))
    med = {
        n: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for n, rs in rows.items()
    }
    for name, (wall, session) in med.items():
        errors = sum(r[2] for r in rows[name])
        print(
            f"{name:10s} command wall {wall:6.2f}s  pytest session {session:6.2f}s  errors+failures {errors}"
        )
    session_x = med["serial"][1] / med["workers 2"][1]
    wall_x = med["serial"][0] / med["workers 2"][0]
    print(
        f"speed-up (serial / workers 2): session {session_x:.2f}x, command {wall_x:.2f}x (median of {repeats})"
    )


if __name__ == "__main__":
    main()
