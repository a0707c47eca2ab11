"""Detached servers: `postgres start` in one step, `postgres stop` in a later one.

The composite action cannot hold a Python context open across steps, so the running server is
described in a small state file (0600: it may hold a password) that later commands read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from db_test_action.errors import EXIT_ENV, EXIT_USAGE, DbTestActionError
from db_test_action.server.launch import ServerInfo, pid_alive, stop_process


def default_state_file(name: str = "default", env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("RUNNER_TEMP") or tempfile.gettempdir()
    return Path(base) / f"db-test-action-{os.getuid()}" / f"postgres-{name}.json"


def write_state(path: Path, info: ServerInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # 0600 from the first byte: the file may hold a password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(dataclasses.asdict(info), indent=2))
    tmp.replace(path)


def _check_private(directory: Path) -> None:
    """The state directory must be ours and not writable by others: in a shared /tmp someone could
    otherwise plant a state file naming another process to kill and another directory to delete."""
    st = directory.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise DbTestActionError(
            f"{directory}: not a private directory of this user (owner uid {st.st_uid}, mode "
            f"{st.st_mode & 0o777:o}); remove it or pass --state-file in a directory of yours",
            EXIT_ENV,
        )


def read_state(path: Path) -> ServerInfo:
    try:
        data = json.loads(path.read_text())
        return ServerInfo(**data)
    except FileNotFoundError:
        raise DbTestActionError(
            f"{path}: no server state here; start one with `db-test-action postgres start`", EXIT_ENV
        ) from None
    except (ValueError, TypeError) as exc:
        raise DbTestActionError(
            f"{path}: not a db-test-action state file ({exc}); delete it", EXIT_USAGE
        ) from None


def stop_detached(path: Path) -> ServerInfo:
    info = read_state(path)
    if info.data_dir:
        pidfile = Path(info.data_dir) / "data" / "postmaster.pid"
        # Signal the pid only while the data dir's own postmaster.pid names it: after a reboot the
        # number may belong to an unrelated process.
        if info.pid and _postmaster_pid(pidfile) == info.pid:
            stop_process(info.pid)
        if Path(info.data_dir).name.startswith("db-test-action-pg-"):  # only what we created
            shutil.rmtree(info.data_dir, ignore_errors=True)
    path.unlink(missing_ok=True)
    return info


def _postmaster_pid(pidfile: Path) -> int | None:
    try:
        first = pidfile.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def is_running(info: ServerInfo) -> bool:
    return bool(info.pid) and pid_alive(info.pid)  # type: ignore[arg-type]
