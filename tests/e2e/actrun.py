"""Running workflows under `act` for the e2e tests: offline, on this machine (`-self-hosted`), with the
remote actions we use replaced by the stand-ins in tests/e2e/standins (mapped with --local-repository,
because act cannot clone), and copies of this checkout as git repositories of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "e2e" / "standins"
PINS = {
    "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065": "setup-python",
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02": "upload-artifact",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093": "download-artifact",
    # only reached for a checkout of another repository: act skips the repository under test's own
    "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683": "checkout",
    "pypa/gh-action-pypi-publish@ed0c53931b1dc9bd32cbe73a98c7f6766f8a527e": "pypi-publish",
}


def act(
    workdir: Path, tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 540
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """`act push` in workdir; returns the process, the jobs' output folder and the artifact store."""
    out, artifacts = tmp / "out", tmp / "artifacts"
    out.mkdir()
    artifacts.mkdir()
    cmd = ["act", "push", "--concurrent-jobs", "1", "-P", "ubuntu-latest=-self-hosted", *args]
    for pin, folder in PINS.items():
        cmd += ["--local-repository", f"{pin}={STANDINS / folder}"]
    for name, value in (
        ("DTA_E2E_OUT", out),
        ("DTA_E2E_ARTIFACTS", artifacts),
        ("DTA_E2E_PYTHON", sys.executable),
        ("DTA_E2E_REPOS", tmp / "repos"),
        *(env or {}).items(),
    ):
        cmd += ["--env", f"{name}={value}"]
    host_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=host_env)
    (tmp / "act.log").write_text(proc.stdout + proc.stderr)  # kept for a failing test's reader
    return proc, out, artifacts


def git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.email=e2e@example.com", "-c", "user.name=e2e", "-c", "commit.gpgsign=false"]
    return subprocess.run([*cmd, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def copy_project(dest: Path) -> Path:
    """This checkout's files (tracked and untracked, minus what .gitignore ignores) copied to dest."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest
