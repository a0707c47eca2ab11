"""A pristine cluster kept per initdb binary and options: later servers copy it instead of running initdb.

Why: initdb is most of a server start (0.5–0.7 s here, on tmpfs), while copying the ~40 MB cluster it
writes takes ~0.06 s (`cp -a`). The copy is taken right after initdb, before the server ever starts, so
it is exactly what initdb would write again (the one difference, a shared system identifier, matters to
replication only). Used by every server we start: `postgres start`, `run`, `-- CMD`, the tests.

The key covers the initdb binary (real path, size, mtime: an upgrade is a new key) and every initdb
argument but the data directory; a server with a password is never cached (its hash is in the cluster).
The cache lives in a directory only we can write (`DB_TEST_ACTION_INITDB_CACHE`, default
`$XDG_CACHE_HOME/db-test-action/initdb`; empty or `0` turns it off). Anything else there — another
owner, a symlink, a template without our stamp — is passed over, never trusted: the start then runs
initdb as before. Every failure here costs speed, never a start.
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

from db_test_action.server.procs import die_with_parent

CACHE_ENV = "DB_TEST_ACTION_INITDB_CACHE"
STAMP = ".db-test-action-template"  # holds the key: a directory without it is not one of our templates
_OFF = ("", "0", "off", "false", "no")


def cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where templates live, or None when caching is off."""
    env = os.environ if env is None else env
    value = env.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value)
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
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


def _private(path: Path, create: bool) -> bool:
    """A real directory of our uid that no one else may write to."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def restore(root: Path, key: str, dest: Path, owner: tuple[int, int] | None) -> bool:
    """Copy the template for `key` to `dest` (which must not exist yet), owned by `owner` (uid, gid)
    when given. True when it did; on any doubt nothing is left at `dest` and the caller runs initdb."""
    template = root / key
    try:
        if not (_private(root, create=False) and _private(template, create=False)):
            return False
        if (template / STAMP).read_text(encoding="ascii") != key:
            return False
    except (OSError, UnicodeDecodeError):
        return False
    if not _copy(template, dest):
        return False
    try:
        (dest / STAMP).unlink()
        if owner is not None:
            _chown_tree(dest, *owner)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def store(root: Path, key: str, data: Path) -> None:
    """Keep a copy of a cluster initdb has just written (never started) for the next start. Two starts
    storing at once both copy; the first rename wins and the other copy is removed."""
    if not _private(root, create=True) or (root / key).exists():
        return
    _remove_abandoned(root)
    tmp = root / f".{key}.{secrets.token_hex(4)}"
    if not _copy(data, tmp):
        return
    try:
        if os.geteuid() == 0:  # initdb ran as the unprivileged account: the template is ours alone
            _chown_tree(tmp, 0, os.getegid())
        (tmp / STAMP).write_text(key, encoding="ascii")
        os.rename(tmp, root / key)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def discard(template: Path) -> None:
    """Forget a template a server would not start from (renamed first: a start copying it now is unharmed
    by half a deletion, and fails over to initdb like this one)."""
    doomed = template.with_name(f".{template.name}.{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(template, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _remove_abandoned(root: Path, older_than_s: float = 3600.0) -> None:
    """Copies a killed start left half-made (`.KEY.RANDOM`): an hour old, no copy is still running."""
    now = time.time()
    for entry in root.glob(".*.*"):
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime > older_than_s:
                shutil.rmtree(entry, ignore_errors=True)


def _copy(src: Path, dest: Path) -> bool:
    """`cp -a`: modes, times and (as root) owners kept; ~2× faster than shutil.copytree on ~1,000 files."""
    # cp dies with us (it would otherwise go on writing into a data dir the reaper deletes)
    result = subprocess.run(
        ["cp", "-a", "--", str(src), str(dest)], stdin=subprocess.DEVNULL, capture_output=True, check=False,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for folder, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, gid)
