"""A real suite that hangs on a row lock, for the time-limit tests (run and act): sources, and a /proc check.

`test_hold` (on one xdist worker) takes a row lock in its fixture `seed` and leaves the transaction open
(idle in transaction) while its body waits; `test_wait` (on the other worker) updates the same row and
blocks on that lock. Files in $HANG_SYNC order the two without sleeps: the waiter says it is set up,
the holder locks and says so, the waiter then blocks. Nothing finishes until a time limit stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCKS = """
import os
import time
from pathlib import Path

import psycopg
import pytest

SYNC = Path(os.environ["HANG_SYNC"])
SYNC.mkdir(parents=True, exist_ok=True)


def wait_for(name):
    for _ in range(3000):  # 300 s: far beyond any limit the tests set
        if (SYNC / name).exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never appeared")


@pytest.fixture
def accounts():
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(7)")
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance int NOT NULL)")
        conn.execute("INSERT INTO accounts VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.execute("SELECT pg_advisory_unlock(7)")


@pytest.fixture
def seed(accounts):
    wait_for("waiter-ready")
    conn = psycopg.connect(os.environ["DATABASE_URL"])  # a transaction opens with the first statement
    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
    (SYNC / "row-locked").touch()
    yield conn
    conn.close()


def test_hold(seed):
    time.sleep(600)


def test_wait(accounts):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        (SYNC / "waiter-ready").touch()
        wait_for("row-locked")
        conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
"""

# pytest that ignores SIGINT (as a real suite did, which then wrote no XML at all): three quick results,
# then a test that never ends.
DEAF = """
import signal
import time


def pytest_configure(config):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
"""

DEAF_TESTS = """
import time


def test_one():
    pass


def test_two():
    assert 1 + 1 == 3


def test_three():
    pass


def test_forever():
    time.sleep(600)


def test_after():
    pass
"""


def leftovers(marker: str) -> list[str]:
    """Processes whose environment holds `marker` (pytest, its workers, a postgres the run started)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found
