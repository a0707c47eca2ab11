"""Installing PostgreSQL server packages with apt when the machine has none (or not the major asked for).

Why here and not in the action's shell: `postgres start`, `run` and `postgres -- CMD` on a fresh
Debian/Ubuntu machine must work without a manual apt step, and the action's install step must make
the same decisions; both call `ensure_server`. GitHub's Ubuntu images ship one major and remove the
PostgreSQL project's apt repository (PGDG) after installing it, so any other major needs that
repository back: its signing key from www.postgresql.org (ACCC4CF8) into
/usr/share/postgresql-common/pgdg and a `deb [signed-by=…] https://apt.postgresql.org/pub/repos/apt
<codename>-pgdg main` line, as https://www.postgresql.org/download/linux/ubuntu/ documents.

Every command runs through PATH (apt-get, apt-cache, curl, install, tee, sudo), so tests replace them
with a recording stand-in; nothing here is downloaded unless apt is really there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from db_test_action.config.settings import first_given, setting_for
from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.binaries import find_bin_dir

PGDG_KEY_URL = "https://www.postgresql.org/media/keys/ACCC4CF8.asc"
PGDG_KEY = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"
PGDG_LIST = "/etc/apt/sources.list.d/pgdg.list"
PGDG_URL = "https://apt.postgresql.org/pub/repos/apt"
NO_INSTALL = setting_for("postgres", "no-install")
ALTERNATIVE = "or give database-url (--database-url) with a `services: postgres` container of that version"

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Apt:
    """How to run apt here: the prefix (`sudo -n` when not root) and the environment."""

    prefix: tuple[str, ...]
    env: Mapping[str, str]

    def run(
        self, *cmd: str, stdin: str | None = None, quiet: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *cmd], input=stdin, capture_output=quiet, text=True, check=False,
            env={**self.env, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip

    def must(self, *cmd: str, stdin: str | None = None) -> None:
        out = self.run(*cmd, stdin=stdin)
        if out.returncode != 0:
            last = ((out.stderr or out.stdout or "").strip().splitlines() or ["no output"])[-1]
            raise DbTestActionError(
                f"postgres install: `{' '.join(cmd)}` failed ({last}); install PostgreSQL by hand, {ALTERNATIVE}",
                EXIT_ENV,
            )


def find_apt(env: Mapping[str, str]) -> Apt | str:
    """An Apt to use, or the reason there is none (no apt-get, not root and no password-less sudo)."""
    path = env.get("PATH")
    if shutil.which("apt-get", path=path) is None:
        return "apt-get is not available (not Debian/Ubuntu)"
    if os.geteuid() == 0:
        return Apt((), env)
    sudo = shutil.which("sudo", path=path)
    if sudo is None:
        return "not root and sudo is not available"
    probe = subprocess.run([sudo, "-n", "true"], capture_output=True, text=True, check=False, env=dict(env))
    if probe.returncode != 0:
        return "not root and sudo asks for a password"
    return Apt(("sudo", "-n"), env)


def candidate(apt: Apt, package: str) -> str | None:
    """The version apt would install (`apt-cache policy`), None when no repository has the package."""
    out = apt.run("apt-cache", "policy", package)
    match = re.search(r"Candidate:\s*(\S+)", out.stdout or "")
    return match.group(1) if match and match.group(1) != "(none)" else None


def os_codename(os_release: str) -> str | None:
    """VERSION_CODENAME (or UBUNTU_CODENAME) from /etc/os-release's text."""
    values = dict(
        line.split("=", 1) for line in os_release.splitlines() if "=" in line and not line.startswith("#")
    )
    name = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME") or ""
    return name.strip().strip('"') or None


def add_pgdg(apt: Apt, codename: str) -> None:
    """The PostgreSQL project's apt repository and its signing key, then a fresh package list."""
    apt.must("install", "-d", "-m", "0755", str(Path(PGDG_KEY).parent))
    apt.must("curl", "-fsSL", "-o", PGDG_KEY, PGDG_KEY_URL)
    line = f"deb [signed-by={PGDG_KEY}] {PGDG_URL} {codename}-pgdg main\n"
    apt.must("tee", PGDG_LIST, stdin=line)
    apt.must("apt-get", "update", "-qq")


def packages_for(major: int | None) -> tuple[str, ...]:
    # From 10 on, postgresql-<major> holds the contrib modules (pgcrypto); the metapackage pair otherwise.
    return ("postgresql", "postgresql-contrib") if major is None else (f"postgresql-{major}",)


def install_server(
    major: int | None, env: Mapping[str, str], say: Say, os_release: str | None = None
) -> tuple[str, ...]:
    """Install the server packages for `major` (None: the distribution's default); the packages installed."""
    found = find_apt(env)
    what = f"PostgreSQL {major}" if major else "PostgreSQL"
    if isinstance(found, str):
        raise DbTestActionError(
            f"postgres: no {what} server binaries and cannot install them ({found}); "
            f"install postgresql-{major or 'N'} yourself, {ALTERNATIVE}",
            EXIT_ENV,
        )
    apt = found
    packages = packages_for(major)
    say(f"installing {' '.join(packages)} with apt-get ({what} server binaries not found)")
    grouped = env.get("GITHUB_ACTIONS") == "true"
    if grouped:  # the apt lines fold into one group in the job log
        print(f"::group::apt-get install {' '.join(packages)}", flush=True)
    try:
        _install(apt, major, packages, say, os_release)
    finally:
        if grouped:
            print("::endgroup::", flush=True)
    return packages


def _install(
    apt: Apt, major: int | None, packages: tuple[str, ...], say: Say, os_release: str | None
) -> None:
    apt.must("apt-get", "update", "-qq")
    if major is not None and candidate(apt, packages[0]) is None:
        if os_release is None:
            try:
                os_release = Path("/etc/os-release").read_text(encoding="utf-8")
            except OSError:
                os_release = ""
        codename = os_codename(os_release)
        if codename is None:
            raise DbTestActionError(
                f"postgres: {packages[0]} is not in apt and /etc/os-release names no codename for the "
                f"PostgreSQL apt repository; {ALTERNATIVE}",
                EXIT_ENV,
            )
        say(f"adding the PostgreSQL apt repository ({PGDG_URL}, {codename}-pgdg) for {packages[0]}")
        add_pgdg(apt, codename)
        if candidate(apt, packages[0]) is None:
            raise DbTestActionError(
                f"postgres-version {major}: no package {packages[0]} even in the PostgreSQL apt repository "
                f"({codename}-pgdg); pick a released major, {ALTERNATIVE}",
                EXIT_ENV,
            )
    apt.must("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages)


def install_refused(env: Mapping[str, str], no_install: bool) -> bool:
    """`--no-install`, or DB_TEST_ACTION_NO_INSTALL read by the one resolver (a bad value is an error, not
    a silent "no"): the plugin and `run` reach the server without a command's resolved settings."""
    return no_install or first_given(NO_INSTALL, ((NO_INSTALL.env, env.get(NO_INSTALL.env)),))


def ensure_server(
    pg_bin: str | None,
    major: int | None,
    *,
    no_install: bool = False,
    env: Mapping[str, str] | None = None,
    say: Say | None = None,
) -> Path:
    """The server bin dir, installing the packages first when there is none and installing is allowed."""
    env = os.environ if env is None else env
    say = say or (lambda text: print(f"db-test-action: {text}", file=sys.stderr, flush=True))
    try:
        return find_bin_dir(pg_bin, major, env)
    except DbTestActionError as missing:
        if pg_bin or env.get("PG_BIN"):
            raise  # an explicit bin dir that is wrong: installing would not fix it
        if install_refused(env, no_install):
            what, _, fix = str(missing).removeprefix("postgres: ").partition("; ")
            raise DbTestActionError(
                f"postgres: {what}, and installing is refused (--no-install / {NO_INSTALL.env}=1); "
                f"{fix or 'install postgresql and postgresql-contrib'}, or allow the install",
                EXIT_ENV,
            ) from None
        install_server(major, env, say)
    try:
        return find_bin_dir(pg_bin, major, env)
    except DbTestActionError as still:
        detail = str(still).removeprefix("postgres: ").split("; install them", 1)[0]
        raise DbTestActionError(
            f"postgres: installed, but {detail}; check the apt output above", EXIT_ENV
        ) from None
