"""server/initdb_cache.py with real servers: a second start unpacks the cluster the first one's initdb
wrote; a template we did not make, or one a server will not start from, is never trusted."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg
import pytest

from db_test_action.server.initdb_cache import CACHE_ENV, cache_dir
from db_test_action.server.launch import LaunchOptions, LocalServer

MARK = "copied-from-the-template"  # a file initdb never writes: its presence proves the copy


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "initdb-cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def _start_and_check(options: LaunchOptions | None = None) -> tuple[Path, bool]:
    """Start, check the data dir's owner and that pgcrypto works, stop; returns the data dir and whether
    it was copied from the template (our mark in it)."""
    with LocalServer(options or LaunchOptions()) as info:
        data = Path(info.data_dir) / "data"
        copied = (data / MARK).exists()
        expected_uid = os.geteuid() if os.geteuid() != 0 else pwd.getpwnam("postgres").pw_uid
        assert data.stat().st_uid == expected_uid and (data / "PG_VERSION").stat().st_uid == expected_uid
        with psycopg.connect(info.url(), autocommit=True) as conn:
            assert conn.execute("SELECT crypt('x', gen_salt('bf')) IS NOT NULL").fetchone() == (True,)
    return data, copied


def _templates(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if not p.name.startswith(".")]


def _only_template(cache: Path) -> Path:
    templates = _templates(cache)
    assert len(templates) == 1 and templates[0].suffix == ".tar", templates
    return templates[0]


def _mark(template: Path) -> None:
    """Add our mark to the template (a member initdb never writes)."""
    (template.parent / MARK).write_text("")
    subprocess.run(["tar", "-rf", str(template), "-C", str(template.parent), MARK], check=True)
    (template.parent / MARK).unlink()


def test_a_second_start_copies_the_cluster_the_first_ones_initdb_wrote(cache: Path) -> None:
    _, copied = _start_and_check()
    assert not copied
    template = _only_template(cache)
    assert template.stat().st_mode & 0o077 == 0 and cache.stat().st_mode & 0o077 == 0
    _mark(template)
    _, copied = _start_and_check()
    assert copied
    # another locale is another cluster: initdb runs, and its copy is a second template
    _, copied = _start_and_check(LaunchOptions(locale="C"))
    assert not copied and len(_templates(cache)) == 2


def _other_owner(template: Path) -> None:
    os.chown(template, pwd.getpwnam("nobody").pw_uid, -1)


def _symlinked(template: Path) -> None:
    elsewhere = template.parent.parent / "elsewhere"
    template.rename(elsewhere)
    template.symlink_to(elsewhere)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t.chmod(0o620), id="group-writable"),
        pytest.param(lambda t: os.truncate(t, t.stat().st_size // 2), id="truncated"),
        pytest.param(_symlinked, id="symlink"),
        pytest.param(
            _other_owner,
            id="other-owner",
            marks=pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another user"),
        ),
    ],
)
def test_a_template_we_cannot_vouch_for_is_passed_over(cache: Path, tamper) -> None:
    _start_and_check()
    template = _only_template(cache)
    _mark(template)
    tamper(template)
    _, copied = _start_and_check()
    assert not copied  # initdb ran; the start did not notice anything else


def test_a_template_the_server_will_not_start_from_is_discarded_and_initdb_runs(cache: Path) -> None:
    _start_and_check()
    template = _only_template(cache)
    # a cluster without its control file (what a half-restored cache could hold), and our mark
    work = cache.parent / "unpacked"
    work.mkdir()
    subprocess.run(["tar", "-xf", str(template), "-C", str(work)], check=True)
    (work / "global" / "pg_control").unlink()
    (work / MARK).write_text("")
    subprocess.run(["tar", "-cf", str(template), "-C", str(work), "."], check=True)
    _, copied = _start_and_check()
    assert not copied and not template.exists()
    _start_and_check()  # and the next start stores a good one again
    members = subprocess.run(["tar", "-tf", str(_only_template(cache))], capture_output=True, text=True)
    assert "./global/pg_control" in members.stdout.split()


def test_password_servers_are_never_cached_and_the_cache_can_be_turned_off(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start_and_check(LaunchOptions(use_password=True))
    assert not cache.exists() or not any(cache.iterdir())
    for off in ("", "0", "off"):
        assert cache_dir({CACHE_ENV: off}) is None
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "db-test-action" / "initdb"
    monkeypatch.setenv(CACHE_ENV, "0")
    _start_and_check()
    assert not cache.exists()


def test_an_unwritable_cache_costs_speed_not_the_start(cache: Path) -> None:
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the directory should be")
    _, copied = _start_and_check()
    assert not copied and cache.is_file()
