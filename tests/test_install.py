"""Installing the server with apt: the decisions, with a stand-in apt (a PATH shim that records calls).

The shim plays apt-get, apt-cache, curl, tee and install: `apt-cache policy` offers a package only when
the test says the distribution has it, or the PGDG list was written (tee) and PGDG has it. The real
download only happens on a real runner; what is checked here is which commands run, in which order.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from db_test_action.server.binaries import candidate_dirs, server_major
from db_test_action.server.install import os_codename

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim plays apt as root (no sudo)")

SHIM = """#!/bin/sh
name="$(basename "$0")"
printf '%s\\n' "$name $*" >> "$SHIM_DIR/calls"
case "$name" in
  tee) cat > "$SHIM_DIR/tee-input"; touch "$SHIM_DIR/pgdg" ;;
  apt-cache)
    pkg="$2"
    if printf ' %s ' "$SHIM_DISTRO" | grep -q " $pkg "; then echo "  Candidate: 1.0"; exit 0; fi
    if [ -e "$SHIM_DIR/pgdg" ] && printf ' %s ' "$SHIM_PGDG" | grep -q " $pkg "; then
      echo "  Candidate: 17.2-1.pgdg+1"; exit 0
    fi
    echo "  Candidate: (none)" ;;
esac
exit 0
"""
INSTALLED = server_major(candidate_dirs(os.environ)[0]) if candidate_dirs(os.environ) else None


@pytest.fixture
def shim(tmp_path: Path, cli_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "shim"
    folder.mkdir()
    for name in ("apt-get", "apt-cache", "curl", "tee", "install"):
        path = folder / name
        path.write_text(SHIM)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = {**cli_env, "PATH": f"{folder}:{cli_env['PATH']}", "SHIM_DIR": str(folder), "SHIM_DISTRO": "",
           "SHIM_PGDG": "postgresql-17"}  # fmt: skip
    env.pop("DB_TEST_ACTION_NO_INSTALL")  # conftest refuses real installs; the shim is no real apt
    return folder, env


def _calls(folder: Path) -> list[str]:
    path = folder / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _cli(cli, env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(INSTALLED is None, reason="no PostgreSQL installed here")
def test_an_installed_major_runs_no_apt_at_all(cli, shim) -> None:
    folder, env = shim
    proc = _cli(cli, env, "postgres", "install", "--postgres-version", str(INSTALLED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("/bin") and _calls(folder) == []


def test_a_missing_major_adds_the_pgdg_repository_then_installs_it(cli, shim) -> None:
    folder, env = shim
    proc = _cli(cli, env, "postgres", "install", "--postgres-version", "17")
    codename = os_codename(Path("/etc/os-release").read_text())
    assert _calls(folder) == [
        "apt-get update -qq",
        "apt-cache policy postgresql-17",
        "install -d -m 0755 /usr/share/postgresql-common/pgdg",
        "curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc "
        "https://www.postgresql.org/media/keys/ACCC4CF8.asc",
        "tee /etc/apt/sources.list.d/pgdg.list",
        "apt-get update -qq",
        "apt-cache policy postgresql-17",
        "apt-get install -y -qq --no-install-recommends postgresql-17",
    ]
    assert (folder / "tee-input").read_text() == (
        "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] "
        f"https://apt.postgresql.org/pub/repos/apt {codename}-pgdg main\n"
    )
    assert "adding the PostgreSQL apt repository" in proc.stderr
    # the stand-in installed nothing, so the binaries are still missing: said in one line, exit 3
    assert proc.returncode == 3 and proc.stderr.strip().splitlines()[-1].startswith(
        "db-test-action: postgres: installed, but"
    )


def test_a_major_the_distribution_has_skips_pgdg(cli, shim) -> None:
    folder, env = shim
    env["SHIM_DISTRO"] = "postgresql-17"
    _cli(cli, env, "postgres", "install", "--postgres-version", "17")
    assert _calls(folder) == [
        "apt-get update -qq",
        "apt-cache policy postgresql-17",
        "apt-get install -y -qq --no-install-recommends postgresql-17",
    ]


def test_an_unknown_major_fails_in_one_line_naming_the_alternative(cli, shim) -> None:
    folder, env = shim
    proc = _cli(cli, env, "postgres", "install", "--postgres-version", "99")
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    assert "postgres-version 99: no package postgresql-99 even in the PostgreSQL apt repository" in last
    assert "database-url" in last and "services: postgres" in last
    assert not any(c.startswith("apt-get install") for c in _calls(folder))


def test_start_and_exec_install_after_one_line_unless_told_not_to(cli, shim, data_root) -> None:
    folder, env = shim
    env["SHIM_DISTRO"] = "postgresql-17"
    proc = _cli(cli, env, "postgres", "--data-root", str(data_root), "--postgres-version", "17", "--", "true")
    lines = [line for line in proc.stderr.splitlines() if "installing" in line]
    assert lines == [
        "db-test-action: installing postgresql-17 with apt-get (PostgreSQL 17 server binaries not found)"
    ]
    assert "apt-get install -y -qq --no-install-recommends postgresql-17" in _calls(folder)

    (folder / "calls").unlink()
    for args, extra in ((["--no-install"], {}), ([], {"DB_TEST_ACTION_NO_INSTALL": "1"})):
        refused = _cli(
            cli, {**env, **extra}, "postgres", "start", "--name", "x", "--postgres-version", "17", *args
        )
        assert refused.returncode == 3 and _calls(folder) == []
        assert "installing is refused (--no-install / DB_TEST_ACTION_NO_INSTALL=1)" in refused.stderr
    # A value that is no boolean is an error naming the variable, never a silent "install"
    bad = _cli(cli, {**env, "DB_TEST_ACTION_NO_INSTALL": "maybe"}, "postgres", "start", "--name", "x",
               "--postgres-version", "17")  # fmt: skip
    assert bad.returncode == 2 and _calls(folder) == [], bad.stderr
    assert 'DB_TEST_ACTION_NO_INSTALL: "maybe" is not valid; use true or false' in bad.stderr


def test_without_apt_the_error_names_database_url_and_services(cli, cli_env, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in cli_env.items() if k != "DB_TEST_ACTION_NO_INSTALL"}
    proc = _cli(cli, {**env, "PATH": str(empty)}, "postgres", "install", "--postgres-version", "17")
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot install them (apt-get is not available (not Debian/Ubuntu))" in line
    assert "database-url" in line and "services: postgres" in line


def test_codename_comes_from_os_release() -> None:
    assert os_codename("ID=ubuntu\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n") == "noble"
    assert os_codename('ID=debian\nVERSION_CODENAME="bookworm"\n') == "bookworm"
    assert os_codename("ID=alpine\n") is None
