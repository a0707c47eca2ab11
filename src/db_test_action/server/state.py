"""Detached servers: `postgres start` in one step, `postgres stop` in a later one.

The composite action cannot hold a Python context open across steps, so the running server is
described in a small state file (0600: it may hold a password) that later commands read.

The state file is trusted only as far as it must be (docs/security.md): in a shared temp dir another
user could plant one naming a process to kill and a directory to delete. So we read only a regular
file owned by us in a directory only we can write, signal only a PID that /proc and the data dir's
postmaster.pid confirm is that data dir's postmaster, and delete only a directory holding our marker.
Starts and stops of one state file are serialised by an exclusive lock beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from db_test_action.errors import EXIT_ENV, EXIT_USAGE, DbTestActionError
from db_test_action.server.launch import ServerInfo
from db_test_action.server.procs import (
    is_postmaster_of,
    pid_alive,
    processes_in,
    signals_deferred,
    stop_process,
    wait_gone,
)
from db_test_action.server.reaper import is_ours, is_private, remove_ours

LOCK_WAIT_S = 300.0


def default_state_file(name: str = "default", env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("RUNNER_TEMP") or tempfile.gettempdir()
    return Path(base) / f"db-test-action-{os.getuid()}" / f"postgres-{name}.json"


def write_state(path: Path, info: ServerInfo) -> None:
    """Write atomically (temp file + rename), 0600 from the first byte: the file may hold a password."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(dataclasses.asdict(info), indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write the state file ({exc.strerror}); check the directory", EXIT_ENV
        ) from None


def _check_private(directory: Path) -> None:
    """The state directory must be ours and not writable by others: in a shared /tmp someone could
    otherwise plant a state file naming another process to kill and another directory to delete."""
    st = directory.lstat()
    if not is_private(st):
        raise DbTestActionError(
            f"{directory}: not a private directory of this user (owner uid {st.st_uid}, mode "
            f"{st.st_mode & 0o777:o}); remove it or pass --state-file in a directory of yours",
            EXIT_ENV,
        )


@contextlib.contextmanager
def state_lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """An exclusive lock per state file (per --name): two `start --name X` never both start a server."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(path.parent)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise DbTestActionError(
                        f"{lock}: another db-test-action holds this server's lock for over {wait_s:g}s; "
                        "wait for it or pass another --name",
                        EXIT_ENV,
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_state(path: Path) -> ServerInfo:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise DbTestActionError(
            f"{path}: no server state here; start one with `db-test-action postgres start`", EXIT_ENV
        ) from None
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot read the state file ({exc.strerror}); it must be a regular file of yours",
            EXIT_ENV,
        ) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not is_private(st, stat.S_IFREG):
            raise DbTestActionError(
                f"{path}: state file not owned by this user or writable by others (owner uid {st.st_uid}, "
                f"mode {st.st_mode & 0o777:o}); not trusted, delete it",
                EXIT_ENV,
            )
        _check_private(path.parent)
        raw = fh.read(1 << 20)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        envs = data.get("url_envs", [])
        if not isinstance(envs, list) or not all(isinstance(e, str) for e in envs):
            raise TypeError("url_envs is not a list of names")
        info = ServerInfo(**{**data, "url_envs": tuple(envs)})
        _check_types(info)
        return info
    except (ValueError, TypeError) as exc:
        raise DbTestActionError(
            f"{path}: not a db-test-action state file ({exc}); delete it", EXIT_USAGE
        ) from None


def _check_types(info: ServerInfo) -> None:
    for field in dataclasses.fields(info):
        if field.name == "url_envs":
            continue  # checked above
        value = getattr(info, field.name)
        wanted = int if field.name in ("port", "pid", "version") else str
        if value is None and field.name not in ("host", "port", "user", "database"):
            continue
        if type(value) is not wanted:
            raise TypeError(f"{field.name} is {type(value).__name__}, not {wanted.__name__}")


def stop_detached(path: Path) -> ServerInfo:
    """Stop the server a state file names, under its lock, with signals deferred until done."""
    with state_lock(path), signals_deferred():
        info = read_state(path)
        if info.data_dir:
            tmp = Path(info.data_dir)
            data = tmp / "data"
            # Signal the pid only while /proc and the data dir's own postmaster.pid name it: after a reboot
            # the number may belong to an unrelated process, and a planted file may name any process.
            if info.pid and is_postmaster_of(info.pid, data):
                stop_process(info.pid)
            if is_ours(tmp, info.owner_token):
                wait_gone(processes_in(tmp), 15.0)
                remove_ours(tmp, info.owner_token)
        path.unlink(missing_ok=True)
        return info


def is_running(info: ServerInfo) -> bool:
    if info.data_dir and info.pid:
        return is_postmaster_of(info.pid, Path(info.data_dir) / "data")
    return bool(info.pid) and pid_alive(info.pid)  # type: ignore[arg-type]
