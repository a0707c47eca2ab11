"""A throwaway PostgreSQL server: initdb into a temp dir, start, prepare extensions, always clean up.

Why not pg_ctl or Docker: starting `postgres` ourselves lets us own the process (stop it on any exit
path), pick a free port with retry, wait on `postmaster.pid`'s "ready" line instead of sleeping, and
drop privileges when running as root — all in well under the time a container takes to pull.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from db_test_action.contract import TOOL_APP
from db_test_action.errors import EXIT_ENV, EXIT_USAGE, DbTestActionError, first_line
from db_test_action.server.binaries import server_major
from db_test_action.server.info import SUPERUSER, ServerInfo, parse_url, redact
from db_test_action.server.initdb_cache import (
    cache_dir,
    discard,
    restore,
    store,
    template_key,
    template_path,
)
from db_test_action.server.install import ensure_server
from db_test_action.server.log import copy_server_log, server_log_settings
from db_test_action.server.prepare import prepare_databases, prepare_owned
from db_test_action.server.procs import (
    die_with_parent,
    pid_alive,
    processes_in,
    signals_deferred,
    stop_process,
    wait_gone,
)
from db_test_action.server.reaper import Reaper, remove_ours, write_marker

# Re-exported: callers import these from here, the launcher's public face.
__all__ = [
    "SUPERUSER",
    "LaunchOptions",
    "LocalServer",
    "ServerInfo",
    "parse_url",
    "pid_alive",
    "redact",
    "stop_process",
]

# Throwaway-friendly: durability off (the data dir is deleted anyway), enough connections for xdist
# workers that each hold a pool, and no autovacuum noise during short suites.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "shared_buffers": "128MB",
}


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    pg_bin: str | None = None
    version: int | None = None
    database: str = "test"
    extensions: tuple[str, ...] = ("pgcrypto",)
    max_connections: int = 300
    use_password: bool = False
    data_root: str | None = None  # parent of the temp data dir; default: default_data_root()
    start_timeout_s: float = 30.0
    settings: tuple[tuple[str, str], ...] = ()  # extra `-c name=value`, applied last
    server_log: bool = True  # machine-readable server log (jsonlog/csvlog) for server-side evidence
    log_copy_to: str | None = None  # on stop, append the server log here (the data dir is deleted)
    locale: str = "C.UTF-8"  # the cluster's collation and ctype: ORDER BY on text follows it
    port: int | None = None  # None: a free port
    user: str = SUPERUSER  # the superuser initdb creates: the role a hard-coded conftest connects as
    password: str | None = None  # this password on TCP (use_password: a generated one)
    no_install: bool = False  # never apt-get install the server when its binaries are missing
    # Detached (`postgres start`): the server outlives this process once its state file is written, so it
    # gets no parent-death signal; owned (`-- CMD`, `run`, tests): it dies with us, whatever kills us.
    detached: bool = False
    log_statements: str = "mod"  # log_statement: none, ddl, mod (collision partners, the fixture doctor)


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Postgres refuses to run as root; pick an existing system user, creating one as a last resort."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "db-test-action"], check=False)
    try:
        return pwd.getpwnam("db-test-action")
    except KeyError:
        raise DbTestActionError(
            "postgres: running as root and no unprivileged user exists (tried postgres, nobody, useradd); "
            "create one or run as a normal user",
            EXIT_ENV,
        ) from None


def default_data_root(min_free_bytes: int = 1 << 30) -> Path:
    """RAM-backed /dev/shm when it has room, else the temp dir.

    Why: on this class of machine initdb takes ~0.35 s on tmpfs against ~1.3 s on disk, and every
    CREATE DATABASE (one per run, per xdist worker) gets the same gain. Docker's default 64 MB /dev/shm
    is too small for a cluster, hence the free-space check.
    """
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= min_free_bytes:
            return shm
    return Path(tempfile.gettempdir())


def _check_reachable(root: Path, account: pwd.struct_passwd) -> None:
    """The unprivileged server user must be able to traverse every parent of its data dir."""
    for directory in [root.resolve(), *root.resolve().parents]:
        try:
            st = directory.stat()
        except OSError:
            continue  # mkdtemp reports a missing root itself
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == account.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise DbTestActionError(
                f"--data-root {root}: {directory} is not traversable by user {account.pw_name}, who runs the "
                "server (we are root); use a world-traversable directory such as /tmp",
                EXIT_ENV,
            )


def _run_as(account: pwd.struct_passwd | None) -> dict[str, object]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalServer:
    """Context manager for a server we start and own; `stop()` is idempotent and always cleans up.

    Lifecycle guarantees (docs/security.md): a reaper process is armed before anything is created, so
    even `kill -9` of this process stops the server and deletes the data dir; an owned server also gets
    a parent-death signal; `stop()` defers SIGINT/SIGTERM/SIGHUP until it is done and returns only when
    every process of the server (backends, logging collector) is gone. `detach()` hands a started server
    over to a state file (`postgres start`): from then on only `postgres stop` ends it.
    """

    def __init__(self, options: LaunchOptions = LaunchOptions()) -> None:
        self.options = options
        self.info: ServerInfo | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._token = secrets.token_hex(16)
        self._reaper: Reaper | None = None

    def __enter__(self) -> ServerInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServerInfo:
        opts = self.options
        try:
            bin_dir = ensure_server(opts.pg_bin, opts.version, no_install=opts.no_install)
            account = _unprivileged_user()
            root = Path(opts.data_root) if opts.data_root else default_data_root()
            if account is not None:
                _check_reachable(root, account)
            self._reaper = Reaper()
            self._tmp = Path(tempfile.mkdtemp(prefix="db-test-action-pg-", dir=root))
            write_marker(self._tmp, self._token)
            self._reaper.register_dir(self._tmp, self._token)
            data = self._tmp / "data"
            password = opts.password or (secrets.token_urlsafe(18) if opts.use_password else None)
            template = self._initdb(bin_dir, data, account, password)
            major = server_major(bin_dir)
            log_dir, log_format = self._log_dir(account, major)
            try:
                port = self._start_postgres(bin_dir, data, account, log_dir, log_format)
            except DbTestActionError:
                if template is None:
                    raise
                # A damaged copy (a cache restored half, a disk that filled): forget it, initdb, retry once;
                # the failed attempt's records must not reach the server evidence.
                discard(template)
                shutil.rmtree(data)
                for path in log_dir.glob("*") if log_dir is not None else ():
                    path.unlink(missing_ok=True)
                self._initdb(bin_dir, data, account, password, use_cache=False)
                port = self._start_postgres(bin_dir, data, account, log_dir, log_format)
            info = ServerInfo(
                host="127.0.0.1",
                port=port,
                user=opts.user,
                database=opts.database,
                password=password,
                data_dir=str(self._tmp),
                pid=self._proc.pid if self._proc else None,
                version=major,
                log_file=str(self._tmp / "postgres.log"),
                server_log_dir=str(log_dir) if log_dir else None,
                server_log_format=log_format,
                owner_token=self._token,
            )
            prepare_owned(info, opts.extensions, bin_dir=bin_dir, socket_dir=data)
            self.info = info
            return info
        except BaseException:
            self.stop()
            raise

    def detach(self) -> None:
        """The server now belongs to a state file: disarm the reaper and forget it (stop() is a no-op)."""
        if self._reaper is not None:
            self._reaper.disarm()
        self._reaper, self._proc, self._tmp = None, None, None

    def _initdb(
        self,
        bin_dir: Path,
        data: Path,
        account: pwd.struct_passwd | None,
        password: str | None,
        use_cache: bool = True,
    ) -> Path | None:
        """Write a new cluster to `data`; returns the cached template it was copied from, if it was."""
        assert self._tmp is not None and self._reaper is not None
        if account is not None:
            os.chown(self._tmp, account.pw_uid, account.pw_gid)
        cmd = [
            str(bin_dir / "initdb"), "-D", str(data), "-U", self.options.user, "--no-sync", "-E", "UTF8",
            f"--locale={self.options.locale}", "--auth-local=trust", "--no-instructions",
        ]  # fmt: skip
        if password:
            pwfile = self._tmp / "pwfile"
            pwfile.write_text(password + "\n")
            if account is not None:
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            cmd += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            cmd += ["--auth-host=trust"]  # host lines cover 127.0.0.1/::1 only: localhost-only trust
        # A cluster initdb wrote before with the same binary and arguments is copied instead (~10× faster).
        key = None if password else template_key(bin_dir / "initdb", cmd[3:])  # cmd[3:]: all but -D DIR
        cache = cache_dir() if key and use_cache else None
        owner = (account.pw_uid, account.pw_gid) if account is not None else None
        if cache is not None and key is not None and restore(cache, key, data, owner):
            return template_path(cache, key)
        # initdb dies with us (it would otherwise re-create the dir the reaper deletes).
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            cwd=self._tmp, preexec_fn=die_with_parent(signal.SIGKILL), **_run_as(account),
        )  # fmt: skip
        self._reaper.register_pid(proc.pid)
        try:
            stdout, stderr = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            last = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
            if "locale" in (stderr or stdout):
                raise DbTestActionError(
                    f"--locale {self.options.locale}: initdb refused it ({last[0]}); use C.UTF-8, C or a "
                    "locale `locale -a` lists",
                    EXIT_USAGE,
                )
            raise DbTestActionError(
                f"{bin_dir}/initdb: failed ({last[0]}); check the data root is writable", EXIT_ENV
            )
        if cache is not None and key is not None:
            store(cache, key, data)
        return None

    def _log_dir(self, account: pwd.struct_passwd | None, major: int) -> tuple[Path | None, str | None]:
        if not self.options.server_log:
            return None, None
        assert self._tmp is not None
        log_dir = self._tmp / "log"
        log_dir.mkdir()
        if account is not None:
            os.chown(log_dir, account.pw_uid, account.pw_gid)
        return log_dir, "jsonlog" if major >= 15 else "csvlog"

    def _start_postgres(
        self,
        bin_dir: Path,
        data: Path,
        account: pwd.struct_passwd | None,
        log_dir: Path | None,
        log_format: str | None,
    ) -> int:
        assert self._tmp is not None and self._reaper is not None
        log = self._tmp / "postgres.log"
        settings = dict(FAST_SETTINGS, max_connections=str(self.options.max_connections))
        if log_dir is not None and log_format is not None:
            settings.update(server_log_settings(log_dir, log_format, self.options.log_statements))
        settings.update(dict(self.options.settings))
        # An owned server gets SIGQUIT (immediate shutdown) when we die; a detached one must outlive us.
        preexec = None if self.options.detached else die_with_parent(signal.SIGQUIT)
        for attempt in range(5):
            port = self._pick_port(attempt)
            cmd = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                   "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
            for name, value in settings.items():
                cmd += ["-c", f"{name}={value}"]
            with open(log, "ab") as log_fh:
                if account is not None:
                    os.chown(log, account.pw_uid, account.pw_gid)
                # A new session: Ctrl-C in the terminal reaches us, and we stop the server in order.
                self._proc = subprocess.Popen(
                    cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self._tmp, start_new_session=True, preexec_fn=preexec, **_run_as(account),
                )  # fmt: skip
            self._reaper.register_pid(self._proc.pid)
            if self._wait_ready(data, log):
                return port
            self._kill()
            # The logging collector outlives a postmaster that failed to bind; once it is gone too, its
            # files hold the bind error (it may not have written it yet while it runs).
            wait_gone(processes_in(self._tmp), 10.0)
            if not _bind_failed(log, log_dir):
                break
            if self.options.port:
                raise DbTestActionError(
                    f"--port {port}: in use by another process; pick another port or stop what listens there",
                    EXIT_ENV,
                )
        raise DbTestActionError(f"postgres: server did not start ({_tail(log)}); see {log}", EXIT_ENV)

    def _pick_port(self, attempt: int) -> int:
        """--port, else a port free a moment ago (another launcher may grab it before we bind: retried)."""
        return self.options.port or _free_port()

    def _wait_ready(self, data: Path, log: Path) -> bool:
        """Poll postmaster.pid for the 'ready' status line; no fixed sleeps."""
        assert self._proc is not None
        deadline = time.monotonic() + self.options.start_timeout_s
        pidfile = data / "postmaster.pid"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return True
            time.sleep(0.005)
        self._kill()
        raise DbTestActionError(
            f"postgres: not ready after {self.options.start_timeout_s:g}s ({_tail(log)}); see {log}", EXIT_ENV
        )

    def _kill(self) -> None:
        if self._proc is None:
            return
        stop_process(self._proc.pid, wait=self._proc.wait)
        self._proc = None

    def stop(self) -> None:
        """Stop every process of the server, keep its log if asked, delete the data dir we created."""
        with signals_deferred():
            self._kill()
            if self._tmp is not None:
                wait_gone(processes_in(self._tmp), 10.0)
                if self.options.log_copy_to:
                    with contextlib.suppress(OSError):
                        copy_server_log(self._tmp / "log", Path(self.options.log_copy_to))
                remove_ours(self._tmp, self._token)
                self._tmp = None
            if self._reaper is not None:
                self._reaper.disarm()
                self._reaper = None


def _bind_failed(log: Path, log_dir: Path | None) -> bool:
    """Whether the server failed because the port was taken. The message goes to stderr (our log file)
    before the logging collector starts and to the collector's files after, so read both; then clear
    the collector's files so the failed attempt's records never reach the server evidence."""
    texts = [log]
    if log_dir is not None:
        texts += sorted(log_dir.glob("*"))
    found = False
    for path in texts:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            found = found or "could not bind" in text or "could not create any TCP/IP sockets" in text
    if log_dir is not None:
        for path in log_dir.glob("*"):
            path.unlink(missing_ok=True)
    return found


def use_external(url: str, extensions: Sequence[str]) -> ServerInfo:
    """External mode: check an existing server answers, install the extensions, and describe it."""
    import psycopg

    info = parse_url(url)
    try:
        with psycopg.connect(
            info.url(), autocommit=True, connect_timeout=5, application_name=TOOL_APP
        ) as conn:
            is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.OperationalError as exc:
        first = first_line(exc)
        raise DbTestActionError(
            f"--database-url {redact(url)}: cannot connect ({first}); check the URL and that the server is up",
            EXIT_ENV,
        ) from None
    # Only a superuser may touch template1; otherwise the extensions live in the target database only.
    prepare_databases(info, extensions, major=None, in_template=bool(is_super and is_super[0]))
    return info


@contextlib.contextmanager
def signals_as_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally`/`__exit__` cleanup runs (main thread only)."""

    fired: list[int] = []

    def _raise(signum: int, _frame: object) -> None:
        if fired:  # the cleanup the first one started must not be cut short by a second
            return
        fired.append(signum)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
