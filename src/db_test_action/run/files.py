"""The files a run leaves in the results dir besides pytest's own: a JUnit file for a run pytest could
not report (a crash, or a shard with no tests) and the manifest that lets the reporter prove the shards
add up to the whole suite. Kept out of runner.py, which drives processes; these only format."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import quoteattr

from db_test_action.contract import MAIN_WORKER
from db_test_action.run.sharding import Split

MANIFEST_VERSION = 1
_TAIL_LINES = 40


def _props(values: Mapping[str, str]) -> str:
    inner = "".join(f"<property name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in values.items())
    return f"<properties>{inner}</properties>"


def synthetic_junit(
    shard: int, run: int, *, error: tuple[str, str, str] | None = None, note: str | None = None
) -> str:
    """A valid JUnit file for a run pytest could not report: one error testcase (name, message, text),
    or none at all with a `note` property (a shard with no tests)."""
    suite = {"shard": str(shard), "run": str(run)}
    if note:
        suite["note"] = note
    stamp = datetime.now(timezone.utc).isoformat()
    head = '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
    if error is None:
        return (
            f'{head}<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="0" time="0.000" '
            f'timestamp="{stamp}">{_props(suite)}</testsuite></testsuites>\n'
        )
    name, message, text = error
    case_props = {"shard": str(shard), "run": str(run), "attempt": "1", "worker": MAIN_WORKER}
    body = text.replace("]]>", "]]]]><![CDATA[>")
    return (
        f'{head}<testsuite name="pytest" errors="1" failures="0" skipped="0" tests="1" time="0.000" '
        f'timestamp="{stamp}">{_props(suite)}<testcase classname="db-test-action" name={quoteattr(name)} '
        f'time="0.000">{_props(case_props)}<error type="pytest.crash" message={quoteattr(message)}>'
        f"<![CDATA[{body}]]></error></testcase></testsuite></testsuites>\n"
    )


def clean_tail(text: str, lines: int = _TAIL_LINES) -> str:
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    kept = [ansi.sub("", line).rstrip() for line in text.strip().splitlines()]
    kept = [line for line in kept if line.strip()]
    return "\n".join(kept[-lines:])


# pytest flags `run` passes for its options, the module that provides each, and that plugin's package.
PLUGIN_OF_FLAG = {
    "-n": ("xdist", "pytest-xdist", "--workers"),
    "--reruns": ("pytest_rerunfailures", "pytest-rerunfailures", "--reruns"),
    "--timeout": ("pytest_timeout", "pytest-timeout", "--test-timeout"),
}
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")


def crash_reason(output: str) -> str:
    """The most telling line of a crashed pytest's output, for the one-line error."""
    lines = [line for line in clean_tail(output, 200).splitlines() if line.strip()]
    for pattern in ("error:", "Error", "ERROR"):
        for line in reversed(lines):
            if pattern in line and not line.startswith("===") and "generated xml" not in line:
                return line.strip()[:300]
    return (lines[-1].strip() if lines else "no output")[:300]


def missing_plugins(output: str) -> list[tuple[str, str]]:
    """(package, our option) for each pytest plugin the project's environment lacks, from pytest's own
    words: a flag it did not recognise (plugins autoloaded) or a `-p` module it could not import."""
    flags: set[str] = set()
    for found in _UNRECOGNIZED.finditer(output):
        flags |= {arg.split("=", 1)[0] for arg in found.group(1).split()}
    modules = set(_NO_MODULE.findall(output))
    return [
        (package, option)
        for flag, (module, package, option) in PLUGIN_OF_FLAG.items()
        if flag in flags or module in modules
    ]


def next_step(output: str, log: Path) -> str:
    """The `<fix>` of a crashed run's error: the plugin to install when one is missing, else the log."""
    needed = missing_plugins(output)
    if not needed:
        return f"see {log}"
    names = " ".join(package for package, _option in needed)
    options = ", ".join(option for _package, option in needed)
    return (
        f"pip install {names} into the project's environment, which {options} needs (pytest's output: {log})"
    )


def write_manifest(
    results_dir: Path,
    split: Split,
    repeat: int,
    server: str = "ours",
    server_log: str | None = None,
    until_failure: bool = False,
    *,
    max_connections: int | None = None,
    workers: int | None = None,
) -> Path:
    path = results_dir / "manifest.json"
    data = {
        "version": MANIFEST_VERSION,
        "shards": len(split.shards),
        "repeat": repeat,
        "until_failure": until_failure,
        "server": server,
        "server_log": server_log,
        "tests": split.shard_of(),
    }
    # What the doctor's headroom check needs: absent rather than null when unknown.
    data.update({k: v for k, v in (("max_connections", max_connections), ("workers", workers)) if v})
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path
