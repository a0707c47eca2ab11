"""Processes of a server we started: who they are, how to stop all of them, how they die with us.

Why a module of its own: stopping a server safely needs more than `kill(pid)`. A PID from a state file
may by now belong to another process (or be planted), so we signal only a PID that `/proc` and the data
dir's `postmaster.pid` both confirm is the postmaster of *that* data dir; the postmaster's children
(backends and the logging collector) outlive it briefly, so a stop waits for them too; and a server
must not outlive the process that owns it, so children get a parent-death signal (Linux prctl).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    return True


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (stat field 22): with the PID, a name that is never reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _all_processes() -> Iterator[tuple[int, str]]:
    """(pid, its /proc directory) of every process visible now; none when /proc cannot be read."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                yield int(entry.name), entry.path


def children_of(pid: int) -> list[tuple[int, int | None]]:
    """(pid, start time) of the direct children of `pid`: a postmaster's backends and logger."""
    found = []
    for child, proc in _all_processes():
        try:
            fields = Path(proc, "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append((child, int(fields[19])))
    return found


def processes_in(directory: Path) -> list[tuple[int, int | None]]:
    """(pid, start time) of every process whose working directory is inside `directory`.

    Every process of a server has its data dir as working directory (the postmaster chdirs there and
    its backends and logging collector inherit it), so this finds all of them, even after the postmaster
    died and they were re-parented.
    """
    root = os.path.realpath(directory)
    found = []
    for pid, proc in _all_processes():
        try:
            cwd = os.readlink(os.path.join(proc, "cwd"))
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.append((pid, start_time(pid)))
    return found


def postmaster_pid(data: Path) -> int | None:
    """The PID in `DATA/postmaster.pid`, when that file names `data` itself on its second line."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 2 or not lines[0].strip().isdigit():
        return None
    if os.path.realpath(lines[1].strip()) != os.path.realpath(data):
        return None
    return int(lines[0].strip())


def is_postmaster_of(pid: int, data: Path) -> bool:
    """True only when `pid` runs `postgres -D data` (its cmdline) and `data/postmaster.pid` names it.

    Without /proc (not Linux) the cmdline cannot be checked and the answer is False: we would rather
    leave a server running than signal a process we cannot identify.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or os.path.basename(argv[0]) != b"postgres" or b"-D" not in argv[:-1]:
        return False
    given = os.fsdecode(argv[argv.index(b"-D") + 1])
    cwd = Path(f"/proc/{pid}/cwd")
    with contextlib.suppress(OSError):
        given = os.path.join(os.readlink(cwd), given)
    return os.path.realpath(given) == os.path.realpath(data) and postmaster_pid(data) == pid


def wait_gone(procs: list[tuple[int, int | None]], timeout_s: float) -> bool:
    """Wait until none of these (pid, start time) processes is alive; True when they are all gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [(p, t) for p, t in procs if pid_alive(p) and (t is None or start_time(p) == t)]
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def stop_process(
    pid: int, wait: Callable[..., object] | None = None, timeout_s: float = 15.0, group: bool = True
) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; works for non-children too.

    Returns only when the process *and its children* are gone (the logging collector exits after the
    postmaster): a stop that returns early would let the caller delete a data dir still in use.
    """
    kids = children_of(pid)
    for sig, grace in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if wait is not None:
            try:
                wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if wait_gone([(pid, None)], grace):
            break
    if not wait_gone(kids, 10.0):
        for kid, _started in kids:  # orphans of a killed postmaster: nothing else will stop them
            if start_time(kid) == _started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(kid, signal.SIGKILL)
        wait_gone(kids, 5.0)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (cleanup must not be cut in half by a signal);
    a pending one is delivered, and its handler runs, on exit. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _prctl() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if not name or not os.path.exists("/proc/self"):
        return None
    try:
        return ctypes.CDLL(name, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when this process dies (Linux only).

    Set after the child's setuid (CPython runs preexec_fn last), since a credential change clears it;
    if we died before it was set, the child exits at once. Only from the main thread: the kernel sends the
    signal when the *thread* that forked the child ends.
    """
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
