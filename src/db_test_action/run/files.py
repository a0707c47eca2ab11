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


# pytest flags `run` passes for its options, and the plugin that must be in the project's environment.
PLUGIN_OF_FLAG = {
    "-n": ("pytest-xdist", "--workers"),
    "--reruns": ("pytest-rerunfailures", "--reruns"),
    "--timeout": ("pytest-timeout", "--test-timeout"),
}
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")


def crash_reason(output: str) -> str:
    """The most telling line of a crashed pytest's output, for the one-line error; a flag pytest did not
    know names the plugin the project's environment lacks."""
    lines = [line for line in clean_tail(output, 200).splitlines() if line.strip()]
    for pattern in ("error:", "Error", "ERROR"):
        for line in reversed(lines):
            if pattern in line and not line.startswith("===") and "generated xml" not in line:
                return (line.strip()[:300] + _missing_plugin(line)).strip()
    return (lines[-1].strip() if lines else "no output")[:300]


def _missing_plugin(line: str) -> str:
    unknown = _UNRECOGNIZED.search(line)
    flags = {arg.split("=", 1)[0] for arg in unknown.group(1).split()} if unknown else set()
    needed = [PLUGIN_OF_FLAG[f] for f in PLUGIN_OF_FLAG if f in flags]
    if not needed:
        return ""
    names = " ".join(package for package, _option in needed)
    options = ", ".join(option for _package, option in needed)
    return f" (the project's environment lacks {names}, which {options} needs: pip install {names})"


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
