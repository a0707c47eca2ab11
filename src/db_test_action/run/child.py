"""pytest as a child process group, and the watch over it: the results stream, per-test limits, the suite limit.

Why a process group: pytest-xdist's workers are pytest's children; a stop that signals only pytest
leaves them running (holding connections, and the lock a hung test waits for). pytest starts in its own
session, so one `killpg` reaches the controller and every worker: SIGINT first (pytest then writes its
JUnit file and runs fixture teardown), SIGKILL after a grace period, and SIGKILL to the group once more
after pytest itself has gone, for a worker or a test's helper process that outlived it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from db_test_action.errors import EXIT_USAGE, DbTestActionError
from db_test_action.server.procs import die_with_parent


class Child:
    """pytest in its own session (so its xdist workers can be stopped as a group), output teed to a log."""

    def __init__(self, cmd: list[str], env: Mapping[str, str], log: Path, show: IO[str] | None) -> None:
        self.log = log
        self._fh = open(log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in finish)
        try:
            self.proc = subprocess.Popen(
                cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, errors="replace", start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # pytest must not run on against a reaped server
            )  # fmt: skip
        except OSError as exc:
            self._fh.close()
            raise DbTestActionError(
                f"run: cannot start {cmd[0]} ({exc.strerror}); check --python", EXIT_USAGE
            ) from None
        self._reader = threading.Thread(target=self._pump, args=(show,), daemon=True)
        self._reader.start()
        self.signals: list[str] = []  # what stop() had to send: "SIGINT", "SIGKILL"

    def _pump(self, show: IO[str] | None) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._fh.write(line)
            if show is not None:
                show.write(line)
                show.flush()

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGINT first (pytest writes its JUnit file on KeyboardInterrupt), then SIGKILL to the group."""
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
                self.signals.append(sig.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=wait_s)
                    break
        # The leader is gone; anything left in its group (a worker, a test's helper) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def finish(self) -> str:
        self.proc.wait()
        self._reader.join(timeout=10)
        self._fh.close()
        return self.log.read_text(encoding="utf-8", errors="replace")


class StreamTail:
    """Reads the plugin's results stream as it grows: complete lines only, each event once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def events(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in data[: end + 1].splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


Snapshot = Callable[[str, float, "str | None"], None]  # (reason, limit_s, test node id or None)


def watch(
    child: Child,
    tail: StreamTail,
    acks: Path,
    *,
    deadline: float | None,
    suite_limit_s: float | None,
    snapshot: Snapshot,
    tick: Callable[[], None],
    grace_s: float,
) -> bool:
    """Wait for pytest; answer per-test limit events with a snapshot; at the suite deadline, snapshot and
    stop pytest. True when the suite limit stopped it."""
    while child.poll() is None:
        for event in tail.events():
            if event.get("e") == "limit" and isinstance(event.get("token"), str):
                snapshot("test-timeout", _number(event.get("limit_s")), str(event.get("node") or "") or None)
                token = Path(event["token"]).name  # a name, never a path out of the acks dir
                with contextlib.suppress(OSError):
                    (acks / token).write_text("")
        if deadline is not None and time.monotonic() >= deadline and child.poll() is None:
            snapshot("suite-timeout", suite_limit_s or 0.0, None)
            child.stop(grace_s)
            return True
        tick()
        time.sleep(0.1)
    return False


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
