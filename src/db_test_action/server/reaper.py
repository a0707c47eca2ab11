"""The reaper: a tiny watchdog process that stops our server and deletes its data dir if we die.

Why a separate process: `kill -9` of `postgres -- CMD` or of `run` gives us no chance to clean up, and a
parent-death signal alone would stop the server but leave its data dir behind. The owner starts the
reaper first and tells it, over a pipe only the owner holds, each thing it creates (`dir PATH TOKEN`,
`pid PID START`). The pipe reaches end-of-file when the owner exits *in any way*; unless the owner said
`disarm` first (a clean stop, or a detached start whose state file is written), the reaper stops the
registered processes and the verified postmaster of each data dir, and deletes the dirs we created.
It ignores SIGINT/SIGTERM/SIGHUP so a signal to the whole job cannot stop it before its work.

Run as `python -m db_test_action.server.reaper`; the owner side is `Reaper` below.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

from db_test_action.server.procs import (
    is_postmaster_of,
    pid_alive,
    postmaster_pid,
    start_time,
    stop_process,
    wait_gone,
)

MARKER = ".db-test-action-owner"


def is_private(st: os.stat_result, kind: int = stat.S_IFDIR) -> bool:
    """A real directory (or file, `kind`) of this user that no one else may write to: what a shared
    temp or cache directory must be before we act on what it holds."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def write_marker(directory: Path, token: str) -> None:
    """Mark a directory as created by this user for this server (O_EXCL: never through a planted link)."""
    fd = os.open(directory / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token)


def is_ours(directory: Path, token: str | None) -> bool:
    """A real directory (not a link) holding our marker: a regular file owned by us with this token."""
    if not token:
        return False
    try:
        if not directory.is_dir() or directory.is_symlink():
            return False
        fd = os.open(directory / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        return st.st_uid == os.geteuid() and fh.read(200).decode("ascii", "replace") == token


def remove_ours(directory: Path, token: str | None) -> bool:
    """Delete the directory only when `is_ours`; True when it was deleted (or is already gone)."""
    if not is_ours(directory, token):
        return not os.path.lexists(directory)
    shutil.rmtree(directory, ignore_errors=True)
    return not os.path.lexists(directory)


def reap(dirs: list[tuple[Path, str]], pids: list[tuple[int, int | None]]) -> None:
    """Stop what the owner registered and the verified postmaster of each dir; delete the dirs."""
    for directory, _token in dirs:
        data = directory / "data"
        pm = postmaster_pid(data)
        if pm is not None and is_postmaster_of(pm, data):
            stop_process(pm, timeout_s=10.0)
    for pid, started in pids:
        if pid_alive(pid) and start_time(pid) == started:
            stop_process(pid, timeout_s=5.0)
    wait_gone(pids, 10.0)
    for directory, token in dirs:
        remove_ours(directory, token)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    dirs: list[tuple[Path, str]] = []
    pids: list[tuple[int, int | None]] = []
    for raw in sys.stdin.buffer:
        word, _, rest = raw.decode("utf-8", "surrogateescape").rstrip("\n").partition(" ")
        if word == "disarm":
            return 0
        if word == "dir":
            path, _, token = rest.rpartition(" ")
            dirs.append((Path(path), token))
        elif word == "pid":
            pid, _, started = rest.partition(" ")
            pids.append((int(pid), int(started) if started.isdigit() else None))
    reap(dirs, pids)
    return 0


class Reaper:
    """The owner's end: start before creating anything, `register_*` as things appear, `disarm` when the
    owner has cleaned up itself or handed the server over (a detached start), then `close`."""

    def __init__(self) -> None:
        read_end, self._write = os.pipe()  # not inheritable: no other child holds the owner's end
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "db_test_action.server.reaper"],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONPATH": _package_root()},
            )  # fmt: skip
        finally:
            os.close(read_end)

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, (line + "\n").encode("utf-8", "surrogateescape"))

    def register_dir(self, directory: Path, token: str) -> None:
        self._send(f"dir {directory} {token}")

    def register_pid(self, pid: int) -> None:
        self._send(f"pid {pid} {start_time(pid) or ''}")

    def disarm(self) -> None:
        self._send("disarm")
        self.close()

    def close(self) -> None:
        """Close our end; without a `disarm` before, the reaper cleans up now (and we wait for it)."""
        if self._write >= 0:
            with contextlib.suppress(OSError):
                os.close(self._write)
            self._write = -1
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=60)
            self._proc = None


def _package_root() -> str:
    """The directory holding our package, so the reaper imports this very code (an editable or a
    zipapp install alike), ahead of whatever PYTHONPATH the user's command had."""
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])


if __name__ == "__main__":
    sys.exit(main())
