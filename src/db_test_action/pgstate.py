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
from db_test_action.postgres import ServerInfo, pid_alive, stop_process


def default_state_file(name: str = "default", env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("RUNNER_TEMP") or tempfile.gettempdir()
    return Path(base) / f"db-test-action-{os.getuid()}" / f"postgres-{name}.json"


def write_state(path: Path, info: ServerInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(info), indent=2))
    os.chmod(tmp, 0o600)  # may hold a password
    tmp.replace(path)


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
    if info.pid:
        stop_process(info.pid)
    if info.data_dir:
        shutil.rmtree(info.data_dir, ignore_errors=True)
    path.unlink(missing_ok=True)
    return info


def is_running(info: ServerInfo) -> bool:
    return bool(info.pid) and pid_alive(info.pid)  # type: ignore[arg-type]
