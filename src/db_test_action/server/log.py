"""The server's log, as the launcher configures and collects it.

The launcher starts PostgreSQL with these settings so that a failing test can later be explained
from the server's side (report/evidence.py reads and attributes the records); `copy_server_log`
gathers the collector's rotated files into one capped file beside the results.
"""

from __future__ import annotations

from pathlib import Path

LOG_STATEMENTS = ("none", "ddl", "mod")


def server_log_settings(log_dir: Path, log_format: str, statements: str = "mod") -> dict[str, str]:
    """What the server must log so a failing test can be explained from the server's side.

    Errors come with their statement; lock waits and deadlocks with DETAIL naming the other process
    (deadlock_timeout short so a deadlocked teardown is reported in 0.1 s, not 1 s); timestamps in UTC
    so they compare with the plugin's; files rotate by size and copy_server_log keeps the newest 64 MB,
    so a runaway suite cannot fill the disk. DDL and data-modifying statements (`log_statement = mod`, with
    their parameters: the keys) and each connection's application_name (`log_connections`, which also tell which databases the suite really used) are what name
    the *other* test of a collision and let the fixture doctor see DDL per test and fixed keys
    (benchmarks/statement_log_overhead.py measures the cost).
    """
    return {
        "logging_collector": "on",
        "log_destination": log_format,
        "log_directory": str(log_dir),
        "log_filename": "postgresql-%Y%m%d-%H%M%S.log",
        "log_rotation_age": "0",
        "log_rotation_size": "16MB",
        "log_file_mode": "0644",
        "log_timezone": "UTC",
        "log_min_messages": "warning",
        "log_min_error_statement": "error",
        "log_lock_waits": "on",
        # One LOG line per connection, naming its database: how the report notices a suite that ignored
        # DATABASE_URL and used a database of its own (which repeats then share).
        "log_connections": "on",
        "deadlock_timeout": "100ms",
        "log_error_verbosity": "default",
        "log_statement": statements,
        "log_disconnections": "on" if statements != "none" else "off",
    }


LOG_CAP_BYTES = 64 << 20


def copy_server_log(log_dir: Path, dest: Path, cap_bytes: int = LOG_CAP_BYTES) -> int:
    """Append the collector's machine-readable files (oldest first) to `dest`; bytes written."""
    files = sorted(p for p in log_dir.glob("*") if p.suffix in (".json", ".csv"))
    budget = cap_bytes
    chunks: list[bytes] = []
    for path in reversed(files):  # newest first, so the cap drops the oldest
        if budget <= 0:
            break
        data = path.read_bytes()
        if len(data) > budget:
            data = data[-budget:]
            data = data[data.find(b"\n") + 1 :]  # whole records only
        chunks.append(data)
        budget -= len(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(dest, "ab") as out:
        for data in reversed(chunks):
            out.write(data)
            written += len(data)
    return written
