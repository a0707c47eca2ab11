"""Cost of the results stream: pytest with the plugin's stream on vs off, on a suite of quick tests.

The stream appends one JSON line per test start, fixture setup, body start and result (open, write,
close each time, so a kill loses nothing). The worst case is a suite of tests that do nothing: there the
per-event cost is all there is. Each sample is a whole `python -m pytest` session of N trivial tests with
three fixtures each, with the runner's plugin active in both variants (shard/run tags, progress line);
only DB_TEST_ACTION_PLUGIN_STREAM differs. The variants alternate (on, off, on, off, …) so drift on this
shared machine hits both alike; medians of pytest's own session time are compared.
Target: < 10 % on this worst case (a real database test takes milliseconds, the stream microseconds).

Run: python benchmarks/stream_overhead.py [repeats=5] [tests=2000]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
import pytest

@pytest.fixture
def a():
    return 1

@pytest.fixture
def b(a):
    return a + 1

@pytest.fixture
def c(b):
    yield b

@pytest.mark.parametrize("n", range({n}))
def test_quick(n, c):
    assert c == 2
"""


def one(folder: Path, stream: bool, n: int) -> tuple[float, int]:
    """(pytest session seconds, stream lines) of one session."""
    out = folder / ("on.jsonl" if stream else "off.jsonl")
    out.unlink(missing_ok=True)
    progress = folder / "progress"
    progress.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_TEST_ACTION_", "PYTEST_"))}
    env.update({"DB_TEST_ACTION_PLUGIN_SHARD": "1", "DB_TEST_ACTION_PLUGIN_RUN": "1",
                "DB_TEST_ACTION_PLUGIN_PROGRESS": str(progress)})  # fmt: skip
    if stream:
        env["DB_TEST_ACTION_PLUGIN_STREAM"] = str(out)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "test_quick.py",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"pytest failed ({done.returncode}): {done.stdout[-2000:]}")
    lines = len(out.read_text().splitlines()) if stream else 0
    return wall, lines


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    with tempfile.TemporaryDirectory(prefix="dta-bench-stream-") as tmp:
        folder = Path(tmp)
        (folder / "test_quick.py").write_text(SUITE.replace("{n}", str(n)))
        one(folder, True, n)  # warm the bytecode caches
        on, off, lines = [], [], 0
        for _ in range(repeats):
            wall, lines = one(folder, True, n)
            on.append(wall)
            off.append(one(folder, False, n)[0])
    mon, moff = statistics.median(on), statistics.median(off)
    print(f"{n} trivial tests × {repeats} sessions each, pytest session wall time (median):")
    print(f"  stream off: {moff:.2f}s")
    print(f"  stream on:  {mon:.2f}s  ({lines} lines, {lines / n:.1f} per test)")
    print(f"  ratio on/off: {mon / moff:.3f}  ({(mon - moff) / n * 1e6:+.0f} µs per test)")


if __name__ == "__main__":
    main()
