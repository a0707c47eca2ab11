"""Releases: one version (`__version__`, `--version`, the tag, CHANGELOG), one owner (`.github/owner`,
scripts/set-owner), the reusable workflows pinned to their own commit, release.yml's least privilege,
Marketplace-ready action.yml, and scripts/release run for real: git against a local bare remote, the
GitHub release against a local HTTP server. The whole workflow under act: tests/e2e/test_release.py."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from db_test_action import __version__
from db_test_action.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "scripts" / "release"
SET_OWNER = ROOT / "scripts" / "set-owner"
OWNER = (ROOT / ".github" / "owner").read_text(encoding="utf-8").strip()
WORKFLOWS = ROOT / ".github" / "workflows"
ICONS = {
    line.strip()
    for line in (ROOT / "tests" / "data" / "branding_icons.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
}
COLORS = {"white", "black", "yellow", "blue", "green", "orange", "red", "purple", "gray-dark"}
ELSEWHERE, NEW = "acme", "acme-labs"  # other owners; spelled f"{…}/db-test-action" so --check skips them
ENV_GIT = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _script(script: Path, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV_GIT, **(env or {})},
    )


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _project(tmp: Path, version: str = "0.3.0", changelog: str | None = None) -> Path:
    """A minimal repository with the files scripts/release reads, committed."""
    root = tmp / "project"
    (root / "src" / "db_test_action").mkdir(parents=True)
    (root / "src" / "db_test_action" / "__init__.py").write_text(f'"""x"""\n\n__version__ = "{version}"\n')
    (root / "CHANGELOG.md").write_text(
        changelog
        if changelog is not None
        else "# Changelog\n\n## [Unreleased]\n\n### Fixed\n- a thing\n\n## [0.3.0] - 2026-01-01\n\n- first\n"
    )
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "start")
    return root


# --- one version ---------------------------------------------------------------------------------------


def test_version_has_one_source_and_the_cli_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject
    assert '[tool.hatch.version]\npath = "src/db_test_action/__init__.py"' in pyproject
    assert importlib.metadata.version("db-test-action") == __version__
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"db-test-action {__version__}"


def test_this_checkout_is_releasable_as_its_own_version() -> None:
    proc = _script(RELEASE, "check", f"v{__version__}")
    assert proc.returncode == 0, proc.stderr
    assert _script(RELEASE, "notes", __version__).stdout.strip()


@pytest.mark.parametrize(
    ("tag", "says"),
    [
        ("0.3.0", "release tags are 'v' + the version"),
        ("v0.3", "is not a version like 1.2.3"),
        ("v0.4.0", "says __version__ = '0.3.0'"),
        ("v0.3.0.dev1", "is not a version like 1.2.3"),
    ],
)
def test_check_refuses_a_tag_that_disagrees(tmp_path: Path, tag: str, says: str) -> None:
    proc = _script(RELEASE, "--root", str(_project(tmp_path)), "check", tag)
    assert proc.returncode == 2
    assert says in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_check_needs_a_changelog_section(tmp_path: Path) -> None:
    root = _project(tmp_path, changelog="# Changelog\n\n## [Unreleased]\n\n- x\n")
    proc = _script(RELEASE, "--root", str(root), "check", "v0.3.0")
    assert proc.returncode == 2 and "no `## [0.3.0]` section" in proc.stderr


def test_prepare_sets_the_version_dates_the_changelog_and_commits(tmp_path: Path) -> None:
    root = _project(tmp_path)
    proc = _script(RELEASE, "--root", str(root), "prepare", "0.4.0")
    assert proc.returncode == 0, proc.stderr
    assert '__version__ = "0.4.0"' in (root / "src" / "db_test_action" / "__init__.py").read_text()
    changelog = (root / "CHANGELOG.md").read_text()
    assert re.search(
        r"## \[Unreleased\]\n\n## \[0\.4\.0\] - \d{4}-\d\d-\d\d\n\n### Fixed\n- a thing", changelog
    )
    assert _git(root, "log", "-1", "--format=%s") == "Release 0.4.0"
    assert _git(root, "status", "--porcelain") == ""
    assert _script(RELEASE, "--root", str(root), "notes", "0.4.0").stdout.strip() == "### Fixed\n- a thing"
    assert _script(RELEASE, "--root", str(root), "check", "v0.4.0").returncode == 0


@pytest.mark.parametrize(
    ("version", "says"),
    [("0.2.9", "is not after the current 0.3.0"), ("0.3.0", "is not after"), ("1.0", "is not a version")],
)
def test_prepare_refuses_going_backwards(tmp_path: Path, version: str, says: str) -> None:
    proc = _script(RELEASE, "--root", str(_project(tmp_path)), "prepare", version)
    assert proc.returncode == 2 and says in proc.stderr


def test_prepare_keeps_keep_a_changelog_links_and_notes_leave_them_out(tmp_path: Path) -> None:
    base = f"https://github.com/{ELSEWHERE}/x"
    links = f"[Unreleased]: {base}/compare/v0.3.0...HEAD\n[0.3.0]: {base}/releases/tag/v0.3.0\n"
    changelog = "# Changelog\n\n## [Unreleased]\n\n- new\n\n## [0.3.0] - 2026-01-01\n\n- first\n\n" + links
    root = _project(tmp_path, changelog=changelog)
    assert _script(RELEASE, "--root", str(root), "notes", "0.3.0").stdout.strip() == "- first"
    assert _script(RELEASE, "--root", str(root), "prepare", "0.4.0").returncode == 0
    text = (root / "CHANGELOG.md").read_text()
    assert f"[Unreleased]: {base}/compare/v0.4.0...HEAD\n[0.4.0]: {base}/compare/v0.3.0...v0.4.0\n" in text
    assert f"[0.3.0]: {base}/releases/tag/v0.3.0" in text
    assert _script(RELEASE, "--root", str(root), "notes", "0.4.0").stdout.strip() == "- new"


def test_prepare_refuses_an_empty_unreleased_section(tmp_path: Path) -> None:
    root = _project(tmp_path, changelog="# Changelog\n\n## [Unreleased]\n\n## [0.3.0] - 2026-01-01\n\n- x\n")
    proc = _script(RELEASE, "--root", str(root), "prepare", "0.3.1")
    assert proc.returncode == 2 and "no entries under `## [Unreleased]`" in proc.stderr
    assert '__version__ = "0.3.0"' in (root / "src" / "db_test_action" / "__init__.py").read_text()


def test_a_prerelease_sorts_before_its_release(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert _script(RELEASE, "--root", str(root), "prepare", "0.4.0rc1").returncode == 0
    assert _script(RELEASE, "--root", str(root), "prepare", "0.4.0rc1").returncode == 2
    (root / "CHANGELOG.md").write_text(
        (root / "CHANGELOG.md").read_text().replace("## [Unreleased]", "## [Unreleased]\n\n- more")
    )
    assert _script(RELEASE, "--root", str(root), "prepare", "0.4.0").returncode == 0


# --- the major tag and the GitHub release ---------------------------------------------------------------


def _with_remote(tmp: Path) -> tuple[Path, Path]:
    root = _project(tmp)
    remote = tmp / "remote.git"
    _git(tmp, "init", "-q", "--bare", str(remote))
    _git(root, "remote", "add", "origin", str(remote))
    _git(root, "tag", "v0")  # the previous v0
    (root / "CHANGELOG.md").write_text(
        (root / "CHANGELOG.md")
        .read_text()
        .replace("## [0.3.0]", "## [0.3.1] - 2026-02-01\n\n- fix\n\n## [0.3.0]")
    )
    init = root / "src" / "db_test_action" / "__init__.py"
    init.write_text(init.read_text().replace("0.3.0", "0.3.1"))
    _git(root, "commit", "-qam", "Release 0.3.1")
    _git(root, "tag", "-a", "v0.3.1", "-m", "0.3.1")
    _git(root, "push", "-q", "origin", "main", "v0", "v0.3.1")
    return root, remote


def test_move_major_points_vx_at_the_release_on_the_remote(tmp_path: Path) -> None:
    root, remote = _with_remote(tmp_path)
    before = _git(remote, "rev-parse", "v0^{commit}")
    proc = _script(RELEASE, "--root", str(root), "move-major", "v0.3.1")
    assert proc.returncode == 0, proc.stderr
    after = _git(remote, "rev-parse", "v0^{commit}")
    assert after == _git(remote, "rev-parse", "v0.3.1^{commit}") != before


def test_move_major_leaves_vx_alone_for_a_prerelease(tmp_path: Path) -> None:
    root, remote = _with_remote(tmp_path)
    before = _git(remote, "rev-parse", "v0^{commit}")
    init = root / "src" / "db_test_action" / "__init__.py"
    init.write_text(init.read_text().replace("0.3.1", "0.4.0rc1"))
    (root / "CHANGELOG.md").write_text(
        (root / "CHANGELOG.md").read_text().replace("## [0.3.1]", "## [0.4.0rc1]\n\n- try\n\n## [0.3.1]")
    )
    _git(root, "commit", "-qam", "rc")
    _git(root, "tag", "v0.4.0rc1")
    proc = _script(RELEASE, "--root", str(root), "move-major", "v0.4.0rc1")
    assert proc.returncode == 0 and "pre-release" in proc.stdout
    assert _git(remote, "rev-parse", "v0^{commit}") == before


def test_move_major_says_in_one_line_when_the_push_fails(tmp_path: Path) -> None:
    root, remote = _with_remote(tmp_path)
    shutil.rmtree(remote)
    proc = _script(RELEASE, "--root", str(root), "move-major", "v0.3.1")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("release: `git push --force…` exited")


def _github_env(httpserver: HTTPServer) -> dict[str, str]:
    return {
        "GITHUB_API_URL": httpserver.url_for("").rstrip("/"),
        "GITHUB_REPOSITORY": f"{ELSEWHERE}/db-test-action",  # written so set-owner --check skips it
        "GITHUB_TOKEN": "t0ken",
    }


def test_github_release_posts_the_changelog_section(tmp_path: Path, httpserver: HTTPServer) -> None:
    root, _remote = _with_remote(tmp_path)
    httpserver.expect_request("/repos/acme/db-test-action/releases", method="POST").respond_with_json(
        {"id": 1, "html_url": "https://example.invalid/r/1"}, status=201
    )
    proc = _script(RELEASE, "--root", str(root), "github-release", "v0.3.1", env=_github_env(httpserver))
    assert proc.returncode == 0, proc.stderr
    (request, _response), *_ = httpserver.log
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.get_json() == {
        "tag_name": "v0.3.1",
        "name": "db-test-action 0.3.1",
        "body": "- fix",
        "prerelease": False,
        "make_latest": "true",
    }


def test_github_release_rerun_updates_the_existing_release(tmp_path: Path, httpserver: HTTPServer) -> None:
    root, _remote = _with_remote(tmp_path)
    base = "/repos/acme/db-test-action/releases"
    httpserver.expect_request(base, method="POST").respond_with_json(
        {"message": "Validation Failed"}, status=422
    )
    httpserver.expect_request(f"{base}/tags/v0.3.1", method="GET").respond_with_json({"id": 42})

    def patched(request: Request) -> Response:
        return Response(json.dumps({"id": 42, "html_url": "u", "got": request.get_json()}), 200)

    httpserver.expect_request(f"{base}/42", method="PATCH").respond_with_handler(patched)
    proc = _script(RELEASE, "--root", str(root), "github-release", "v0.3.1", env=_github_env(httpserver))
    assert proc.returncode == 0, proc.stderr
    assert [req.method for req, _ in httpserver.log] == ["POST", "GET", "PATCH"]
    assert httpserver.log[-1][0].get_json()["body"] == "- fix"


def test_github_release_refused_is_an_environment_error(tmp_path: Path, httpserver: HTTPServer) -> None:
    root, _remote = _with_remote(tmp_path)
    httpserver.expect_request("/repos/acme/db-test-action/releases", method="POST").respond_with_json(
        {"message": "Resource not accessible by integration"}, status=403
    )
    proc = _script(RELEASE, "--root", str(root), "github-release", "v0.3.1", env=_github_env(httpserver))
    assert proc.returncode == 3
    assert "GitHub answered 403 Resource not accessible by integration" in proc.stderr
    assert "contents: write" in proc.stderr


# --- one owner ------------------------------------------------------------------------------------------


def test_every_reference_agrees_with_github_owner() -> None:
    proc = _script(SET_OWNER, "--check")
    assert proc.returncode == 0, proc.stdout
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "workflows").glob("*.yml"))
    assert f"{OWNER}/db-test-action/.github/workflows/db-tests.yml@v1" in text  # the check sees the starters


def test_set_owner_rewrites_every_reference(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    listed = _git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    before = sum(t.count(f"{OWNER}/db-test-action") for t in _texts(copy))
    assert before >= 10
    proc = _script(SET_OWNER, "--root", str(copy), NEW)
    assert proc.returncode == 0, proc.stderr
    assert (copy / ".github" / "owner").read_text() == f"{NEW}\n"
    after = "\n".join(_texts(copy))
    assert after.count(f"{NEW}/db-test-action") >= before
    assert _script(SET_OWNER, "--root", str(copy), "--check").returncode == 0
    assert (
        f"uses: {NEW}/db-test-action/.github/workflows/db-tests.yml@v1"
        in (copy / "workflows" / "db-tests.yml").read_text()
    )
    # a file that still says the old owner is caught, with where
    (copy / "docs-extra.md").write_text(f"uses: {OWNER}/db-test-action@v1\n")
    proc = _script(SET_OWNER, "--root", str(copy), "--check")
    assert proc.returncode == 1 and f"docs-extra.md:1: {OWNER}/db-test-action" in proc.stdout


def _texts(root: Path) -> list[str]:
    out = []
    for path in root.rglob("*"):
        if path.is_file():
            with contextlib.suppress(UnicodeDecodeError):
                out.append(path.read_text(encoding="utf-8"))
    return out


@pytest.mark.parametrize("owner", ["", "-acme", "acme-", "a b", "a--b", "x" * 40, "acme/x"])
def test_set_owner_refuses_a_name_github_would(tmp_path: Path, owner: str) -> None:
    root = tmp_path / "r"
    (root / ".github").mkdir(parents=True)
    (root / ".github" / "owner").write_text("org\n")
    proc = _script(SET_OWNER, "--root", str(root), "--", owner)
    assert proc.returncode == 2 and proc.stderr.startswith("set-owner: owner:")
    assert (root / ".github" / "owner").read_text() == "org\n"


# --- the reusable workflows: one commit end to end -------------------------------------------------------


@pytest.mark.parametrize("name", ["db-tests.yml", "nightly-stability.yml"])
def test_reusable_workflows_use_their_own_commit(name: str) -> None:
    """Every job that needs db-test-action checks out job.workflow_repository at job.workflow_sha and
    runs the action from that checkout; nothing names the project by a tag."""
    doc = _load(WORKFLOWS / name)
    jobs_with_action = 0
    for job_name, job in doc["jobs"].items():
        steps = job.get("steps", [])
        uses = [step.get("uses", "") for step in steps]
        assert not any(u.startswith(f"{OWNER}/db-test-action") for u in uses), job_name
        wants = any(u == "./.db-test-action" for u in uses) or any(
            "./.db-test-action" in step.get("run", "") for step in steps
        )
        if not wants:
            continue
        jobs_with_action += 1
        ids = [step.get("id") for step in steps]
        self_step = steps[ids.index("self")]
        assert self_step["env"] == {
            "WORKFLOW_REPOSITORY": "${{ job.workflow_repository }}",
            "WORKFLOW_SHA": "${{ job.workflow_sha }}",
        }
        checkout = steps[ids.index("self") + 1]
        assert checkout["uses"].startswith("actions/checkout@")
        assert checkout["with"]["repository"] == "${{ steps.self.outputs.repository }}"
        assert checkout["with"]["ref"] == "${{ steps.self.outputs.sha }}"
        assert checkout["with"]["path"] == ".db-test-action"
        assert checkout["with"]["persist-credentials"] is False
    assert jobs_with_action == 2
    assert "ref: v1" not in (WORKFLOWS / name).read_text()


# --- release.yml: least privilege, trusted publishing ---------------------------------------------------


def test_release_workflow_runs_on_version_tags_with_least_privilege() -> None:
    doc = _load(WORKFLOWS / "release.yml")
    on = doc.get(True) or doc.get("on")
    assert on == {"push": {"tags": ["v*.*.*"]}}
    assert doc["permissions"] == {}
    perms = {name: job.get("permissions") for name, job in doc["jobs"].items()}
    assert perms == {
        "test": {"contents": "read"},
        "build": {"contents": "read"},
        "pypi": {"id-token": "write"},
        "github-release": {"contents": "write"},
    }
    assert [doc["jobs"][n].get("needs") for n in perms] == [None, "test", "build", "pypi"]
    text = (WORKFLOWS / "release.yml").read_text()
    assert "secrets." not in text and "password" not in text  # trusted publishing: no token anywhere
    publish = next(s for s in doc["jobs"]["pypi"]["steps"] if "pypi-publish" in s.get("uses", ""))
    assert re.fullmatch(r"pypa/gh-action-pypi-publish@[0-9a-f]{40}", publish["uses"])
    assert doc["jobs"]["pypi"]["environment"]["name"] == "pypi"
    runs = "\n".join(s.get("run", "") for job in doc["jobs"].values() for s in job["steps"])
    for command in ("scripts/release check", "bash .ci/run", "twine check --strict", "scripts/release smoke"):
        assert command in runs
    assert "scripts/release github-release" in runs and "scripts/release move-major" in runs


# --- Marketplace ----------------------------------------------------------------------------------------


def test_action_yml_fits_the_marketplace() -> None:
    action = _load(ROOT / "action.yml")
    name, description = action["name"], action["description"]
    assert isinstance(name, str) and name.strip() and "\n" not in name
    # GitHub refuses to publish a description of 125 characters or more
    assert isinstance(description, str) and len(description) < 125 and "\n" not in description.strip()
    branding = action["branding"]
    assert branding["color"] in COLORS
    assert branding["icon"] in ICONS, f"{branding['icon']} is not one of GitHub's branding icons"
    assert len(ICONS) > 250 and "database" in ICONS and "coffee" not in ICONS
    # the listing is the README: its first screen says what it is and how to use it
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:3000]
    assert head.startswith("# ") and f"uses: {OWNER}/db-test-action@v1" in head
