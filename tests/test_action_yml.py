"""action.yml and the workflows: every input described, defaulted and used; no `${{ }}` inside scripts;
third-party actions pinned; actionlint and zizmor report nothing. (That every input is documented:
tests/test_docs.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
WORKFLOWS = sorted(
    [
        *ROOT.glob(".github/workflows/*.yml"),
        *ROOT.glob("workflows/*.yml"),
        *ROOT.glob("tests/e2e/workflows/*.yml"),
    ]
)
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
OWNER = (ROOT / ".github" / "owner").read_text(encoding="utf-8").strip()  # scripts/set-owner changes it
OUR_OWN = (f"{OWNER}/db-test-action@", f"{OWNER}/db-test-action/")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _steps(doc: dict) -> list[dict]:
    if "runs" in doc:
        return doc["runs"].get("steps", [])
    return [step for job in doc.get("jobs", {}).values() for step in job.get("steps", []) or []]


def _uses(doc: dict) -> list[str]:
    found = [step["uses"] for step in _steps(doc) if "uses" in step]
    found += [job["uses"] for job in doc.get("jobs", {}).values() if "uses" in job]
    return found


def test_every_input_is_described_defaulted_as_a_string_and_used() -> None:
    action = _load(ACTION)
    text = ACTION.read_text(encoding="utf-8")
    body = text[text.index("\noutputs:") :]
    for name, spec in action["inputs"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), f"{name}: inputs are kebab-case"
        assert spec.get("description"), f"{name}: no description"
        assert isinstance(spec.get("default"), str), f"{name}: default must be a quoted string"
        assert "required" not in spec, f"{name}: inputs are optional"
        assert f"inputs.{name}" in body, f"{name}: declared but never used"
    assert set(action["outputs"]) == {"database-url", "report-json", "junit-merged", "results-dir", "outcome"}


@pytest.mark.parametrize("path", [ACTION, *WORKFLOWS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_expression_inside_a_run_script(path: Path) -> None:
    for step in _steps(_load(path)):
        assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name', step['run'][:40])}"


@pytest.mark.parametrize("path", [ACTION, *WORKFLOWS], ids=lambda p: str(p.relative_to(ROOT)))
def test_third_party_actions_are_pinned_by_sha(path: Path) -> None:
    for uses in _uses(_load(path)):
        if uses.startswith(("./", *OUR_OWN)):
            continue
        assert SHA_PIN.match(uses), f"{path.name}: {uses} is not pinned to a commit SHA"


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not installed")
def test_actionlint_is_clean() -> None:
    out = subprocess.run(["actionlint", *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor not installed")
def test_zizmor_is_clean() -> None:
    cmd = ["zizmor", "--offline", "--config", ".github/zizmor.yml", "action.yml"]
    cmd += [str(p.relative_to(ROOT)) for p in WORKFLOWS]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No findings to report" in out.stdout + out.stderr
