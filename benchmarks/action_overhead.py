"""What the action costs on top of pytest: before (pip-installing itself into the project's environment)
and after (its own uv venv, uv's cache restored by actions/cache), with a cold and a warm cache.

Each variant runs the same workflow under `act` (offline, host executor, the e2e stand-ins: a bare venv
for setup-python as on a fresh runner, a directory-backed actions/cache): `uses: ./` on a slice of the
robust example. From act's log: each step's time ("Success - Main <step> [1.234s]"), the job time (the
top-level steps: checkout, setup-python, the project's own install, the action) and pytest's own time
(the runner's "N passed in X s" line). Job overhead = job time − pytest time; the action's overhead =
the action's step (`./`, which holds its nested steps) − pytest time. Only the action differs between
variants: the project install (the example's dependencies into the bare venv) is the same in all.

"Before" is the action at --before REF (default: main), extracted with `git archive`; "after" is the
working tree. Cold: an empty cache directory; warm: the cache the cold run saved (and, before, pip's
own HTTP cache, which is warm on this machine anyway — the comparison is generous to "before").

usage: python benchmarks/action_overhead.py [--before main] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from actrun import PINS, STANDINS  # noqa: E402 (the one list of act stand-ins, shared with the e2e tests)

PROJECT_INSTALL = "python -m pip install -q 'sqlalchemy[asyncio]>=2.0' 'asyncpg>=0.29' pytest pytest-asyncio pytest-xdist 'psycopg[binary]'"
WORKFLOW = f"""name: overhead
on: push
permissions: {{}}
jobs:
  suite:
    runs-on: ubuntu-latest
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0
      - name: Project install
        run: {PROJECT_INSTALL}
      - uses: ./
        with:
          setup-python: 'false'
          working-directory: examples
          install-command: 'true'
          pytest-args: robust/test_validation.py robust/test_encryption.py -q
          workers: '2'
          comment: 'false'
"""
STEP_RE = re.compile(r"Success - (?:Main|Post) (.+?) \[([\dhmsµun.]+)\]")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
PYTEST_RE = re.compile(r"run 1/1: exit \d+ \([^)]*\), .*? in ([\d.]+)s")
TOOL_STEPS = (
    "Install db-test-action",
    "pytest plugins the project lacks",
    "Restore the uv cache",  # before the initdb cache joined it
    "Save the uv cache",
    "Restore the cache",
    "Save the cache",
    "db-test-action tool key",
)


def _seconds(duration: str) -> float:
    """A Go duration as act prints it: 1m0.24s, 4.13ms, 92µs."""
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"([\d.]+)(h|ms|µs|us|ns|m|s)", duration))


def _prepare(tree: Path, ref: str | None) -> Path:
    if ref is None:
        shutil.copytree(
            ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info")
        )
    else:
        tree.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
    for old in (tree / ".github" / "workflows").glob("*.yml"):
        old.unlink()
    (tree / ".github" / "workflows" / "overhead.yml").write_text(WORKFLOW)
    git = ["git", "-c", "user.email=b@example.com", "-c", "user.name=bench"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *args], cwd=tree, check=True, capture_output=True)
    return tree


def _act(tree: Path, cache: Path, work: Path) -> dict[str, float]:
    # PYTHONDONTWRITEBYTECODE is emptied as on a GitHub-hosted runner (this machine sets it): with it, each
    # step of "after" compiled the modules it imports again, while "before" ran what pip compiled at install.
    cmd = ["act", "push", "-P", "ubuntu-latest=-self-hosted", "--env", "DTA_E2E_ISOLATED=1",
           "--env", "PYTHONDONTWRITEBYTECODE=",
           "--env", f"DTA_E2E_PYTHON={sys.executable}", "--env", f"DTA_E2E_CACHE={cache}",
           "--env", f"DTA_E2E_ARTIFACTS={work / 'artifacts'}"]  # fmt: skip
    for pin, folder in PINS.items():
        cmd += ["--local-repository", f"{pin}={STANDINS / folder}"]
    env = {
        k: v for k, v in __import__("os").environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))
    }
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=1200, env=env)
    log = proc.stdout + proc.stderr
    (work / f"act-{tree.name}-{cache.name}-{len(list(work.glob('act-*')))}.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"act failed for {tree.name}; see {work}")
    return measure(log)


def measure(log: str) -> dict[str, float]:
    """Step times from act's log. The composite action's own line (`./`) holds its nested steps, so the
    job is the top-level steps only; the action's overhead is `./` minus pytest's own time."""
    steps: dict[str, float] = {}
    for name, duration in STEP_RE.findall(log):
        steps[name.strip()] = steps.get(name.strip(), 0.0) + _seconds(duration)
    pytest_s = sum(float(x) for x in PYTEST_RE.findall(log))
    top = [k for k in steps if k in ("./", "Project install") or k.startswith("actions/")]
    job = sum(steps[k] for k in top)
    action = steps.get("./", 0.0)
    tool = sum(v for k, v in steps.items() if k.startswith(TOOL_STEPS))
    return {"job": job, "pytest": pytest_s, "action": action, "install": tool,
            "overhead": action - pytest_s, "job_overhead": job - pytest_s}  # fmt: skip


def _print(label: str, r: dict[str, float]) -> None:
    print(f"{label:22} job {r['job']:6.1f}s  pytest {r['pytest']:5.1f}s  action {r['action']:5.1f}s  "
          f"of which installing it {r['install']:5.1f}s  action overhead {r['overhead']:5.1f}s  "
          f"job overhead {r['job_overhead']:6.1f}s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the action to compare with")
    parser.add_argument("--keep", type=Path, help="keep act logs here")
    parser.add_argument("--reparse", type=Path, metavar="DIR", help="only re-read the act logs a run kept")
    args = parser.parse_args()
    if args.reparse:
        for path in sorted(args.reparse.glob("act-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
            _print(path.stem, measure(path.read_text()))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="dta-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    before = _prepare(work / "before", args.before)
    after = _prepare(work / "after", None)
    results = {}
    for label, tree, cache in (
        ("before cold", before, work / "cache-before"),
        ("before warm", before, work / "cache-before"),
        ("after cold", after, work / "cache-after"),
        ("after warm", after, work / "cache-after"),
    ):
        results[label] = _act(tree, cache, work)
        _print(label, results[label])
    for kind in ("cold", "warm"):
        for key, what in (("overhead", "action overhead"), ("job_overhead", "job overhead")):
            b, a = results[f"before {kind}"][key], results[f"after {kind}"][key]
            print(f"{kind}: {what} after/before = {a:.1f}s / {b:.1f}s = {a / b:.2f}")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
