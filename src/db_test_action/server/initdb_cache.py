"""A pristine cluster kept per initdb binary and options: later servers copy it instead of running initdb.

Why: initdb is most of a server start (0.5–0.7 s here, on tmpfs), while unpacking the ~40 MB cluster it
writes takes ~0.05 s. The copy is taken right after initdb, before the server ever starts, so it is
exactly what initdb would write again (the one difference, a shared system identifier, matters to
replication only). Used by every server we start: `postgres start`, `run`, `-- CMD`, the tests.

A template is one tar file, `<key>.tar`: one file is what a cache moves fastest (the action keeps it in
its `actions/cache` entry; copying the ~1,000 files of the cluster itself took ~0.5 s on a slow disk,
the tar 0.01 s). The key covers the initdb binary (real path, size, mtime: an upgrade is a new key) and
every initdb argument but the data directory; a server with a password is never cached (its hash is in
the cluster). The cache lives in a directory only we can write (`DB_TEST_ACTION_INITDB_CACHE`, default
`$XDG_CACHE_HOME/db-test-action/initdb`; empty or `0` turns it off). Anything else there — another
owner, a symlink, a file others may write — is passed over, never trusted: the start then runs initdb
as before. A template is written under a temporary name and renamed, so a half-written one never has
its final name; one that does not unpack, or that a server will not start from, is discarded. Every
failure here costs speed, never a start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from db_test_action.config.values import FALSE
from db_test_action.server.procs import die_with_parent
from db_test_action.server.reaper import is_private

CACHE_ENV = "DB_TEST_ACTION_INITDB_CACHE"


def cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where templates live, or None when caching is off."""
    env = os.environ if env is None else env
    value = env.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in FALSE else Path(value)
    base = env.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no HOME and no passwd entry: no cache, initdb every time
            return None
    return Path(base) / "db-test-action" / "initdb"


def template_key(initdb: Path, args: Sequence[str]) -> str | None:
    """The cache key for initdb with these arguments (the data directory excluded), or None when the
    binary cannot be identified."""
    try:
        real = initdb.resolve(strict=True)
        st = real.stat()
    except (OSError, RuntimeError):
        return None
    identity = [str(real), st.st_size, st.st_mtime_ns, *args]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def template_path(root: Path, key: str) -> Path:
    return root / f"{key}.tar"


def _private(path: Path, create: bool = False, kind: int = stat.S_IFDIR) -> bool:
    """A real directory (or file) of our uid that no one else may write to."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return is_private(st, kind)


def restore(root: Path, key: str, dest: Path, owner: tuple[int, int] | None) -> bool:
    """Unpack the template for `key` into `dest` (which must not exist yet), owned by `owner` (uid, gid)
    when given. True when it did; on any doubt nothing is left at `dest` and the caller runs initdb."""
    template = template_path(root, key)
    if not (_private(root) and _private(template, kind=stat.S_IFREG)):
        return False
    try:
        dest.mkdir(mode=0o700)
    except OSError:  # never ours to remove
        return False
    try:
        _tar("-x", "-f", str(template), "-C", str(dest))
        if owner is not None:
            _chown_tree(dest, *owner)
    except (OSError, subprocess.CalledProcessError):
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def store(root: Path, key: str, data: Path) -> None:
    """Keep a cluster initdb has just written (never started) for the next start. Two starts storing at
    once both write; the first rename wins and the other file is removed."""
    template = template_path(root, key)
    if not _private(root, create=True) or template.exists():
        return
    _remove_abandoned(root)
    tmp = root / f".{key}.{secrets.token_hex(4)}.tar"
    try:
        # Owners are not kept (restore sets them): as root, initdb's files belong to the server's account.
        _tar("-c", "-f", str(tmp), "-C", str(data), "--owner=0", "--group=0", "--numeric-owner", ".")
        tmp.chmod(0o600)
        os.rename(tmp, template)
    except (OSError, subprocess.CalledProcessError):
        tmp.unlink(missing_ok=True)


def discard(template: Path) -> None:
    """Forget a template a server would not start from."""
    with contextlib.suppress(OSError):
        template.unlink()


def _remove_abandoned(root: Path, older_than_s: float = 3600.0) -> None:
    """Files a killed start left half-written (`.KEY.RANDOM.tar`): an hour old, no one writes them now."""
    now = time.time()
    for entry in root.glob(".*.tar"):
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime > older_than_s:
                entry.unlink()


def _tar(*args: str) -> None:
    """GNU tar (or bsdtar); it dies with us, so it never goes on writing into a data dir the reaper deletes."""
    subprocess.run(
        ["tar", *args], stdin=subprocess.DEVNULL, capture_output=True, check=True,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )  # fmt: skip


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for folder, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, gid)
