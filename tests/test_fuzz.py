"""Property-based fuzzing of every parser of untrusted input, starting from real files and mutating them.

Targets: JUnit (through the report command's own reading path), the runner's manifest, the server log
(jsonlog and csvlog), the config table, the event payload, the `--base` report and the stability
history. The property is the same everywhere: the input becomes a value, a named problem or a one-line
DbTestActionError with an exit code other than 4 — never another exception — within a bounded time
per case (hypothesis' deadline).

Profiles: `ci` (default, short) and `long` (by hand: `HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db_test_action.cli import build_parser
from db_test_action.commands import report as report_cmd
from db_test_action.commands import stability as stability_cmd
from db_test_action.commands.files import load_table, read_json
from db_test_action.commands.publish import read_event
from db_test_action.config.report import resolve_report_config
from db_test_action.errors import EXIT_INTERNAL, DbTestActionError
from db_test_action.publish.publisher import pull_request_from_event
from db_test_action.report.build import validate_manifest
from db_test_action.report.evidence import parse_server_log
from db_test_action.stability.conflicts import Conflict
from db_test_action.stability.history import dump_history, parse_history
from db_test_action.stability.nightly import TestCounts, night_from_counts

settings.register_profile(
    "ci", max_examples=40, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent
CORPUS = sorted((ROOT / "data" / "corpus").rglob("*.xml")) + sorted((ROOT / "data" / "junit").glob("*.xml"))
CORPUS = [p for p in CORPUS if p.stat().st_size < 200_000][:60]

# Values that broke parsers before: wrong types, non-finite and huge numbers, deep nesting, bad bytes.
HOSTILE_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1.0, 1e308, 1e307, -0.0]),
    st.sampled_from([10**20, 2**63, 2**64, 10**300, 10**9 + 1]),  # past int64, float and count limits
    st.text(max_size=30),
    st.sampled_from(["", "nan", "1e999", "-1", "\u202e", "\x1b[31m", "9" * 50]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
HOSTILE_TOKENS = [
    b"nan", b"NaN", b"Infinity", b"1e999", b"1e308", b"-1", b"null", b"[]", b"{}", b'"x"', b"\xff\xfe", b"\x00",
    b"[" * 2000, b"9" * 5000, b'"' + b"x" * 200_000 + b'"', b"\n", b",", b"\r", "\u202e".encode(),
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """Byte-level mutations of a real file: cuts, flips, splices of hostile tokens, duplications."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "dup", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "cut":
            del data[pos:]
        elif op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(HOSTILE_TOKENS))
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
        else:
            del data[pos : pos + draw(st.integers(1, 50))]
    return bytes(data)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:20]):
            out += _paths(item, (*prefix, index))
    return out


@st.composite
def json_mutated(draw: st.DrawFn, seed: Any) -> Any:
    """Structure-level mutations of a real JSON document: a few values replaced by hostile ones."""
    doc = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        value = draw(HOSTILE_JSON)
        if not path:
            doc = value
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return doc


def _tolerated(exc: BaseException) -> bool:
    return isinstance(exc, DbTestActionError) and exc.exit_code != EXIT_INTERNAL


EMPTY_CONFIG = Path(tempfile.mkdtemp(prefix="dta-fuzz-config-")) / "empty.toml"
EMPTY_CONFIG.write_text("")  # never the pyproject.toml of whatever directory the fuzzer runs in


def _report_args(paths: list[str], **extra: Path) -> argparse.Namespace:
    """The report command's own parser: the fuzzer drives exactly what the CLI would."""
    argv = ["report", *paths, "--config", str(EMPTY_CONFIG)]
    for flag, value in extra.items():
        argv += [f"--{flag}", str(value)]
    args = build_parser(load=("report",)).parse_args(argv)
    args.passthrough = []
    return args


def _run_report(workdir: Path, **extra: Any) -> None:
    """The report command, in process, on `workdir`: exit 0/1/2 and both outputs written, always."""
    args = _report_args(
        [str(workdir / "results")], markdown=workdir / "r.md", json=workdir / "r.json", **extra
    )
    for out in (workdir / "r.md", workdir / "r.json"):
        out.unlink(missing_ok=True)
    code = report_cmd.run(args, env={}, cwd=workdir)  # input defects are problems: nothing may raise
    assert code in (0, 1, 2)
    assert (workdir / "r.md").exists() and (workdir / "r.json").exists()


@pytest.fixture(scope="module")
def workdir() -> Path:
    with tempfile.TemporaryDirectory(prefix="dta-fuzz-") as tmp:
        root = Path(tmp)
        (root / "results").mkdir()
        yield root


def _fresh_results(root: Path) -> Path:
    results = root / "results"
    for path in results.iterdir():
        path.unlink()
    return results


PASSING = (
    b'<testsuites><testsuite name="pytest" time="2.0">'
    b'<testcase classname="tests.test_ok" name="test_a" time="0.5"/></testsuite></testsuites>'
)


@pytest.mark.skipif(not CORPUS, reason="no JUnit corpus")
@given(data=st.data())
def test_fuzz_junit_never_crashes_the_report(workdir: Path, data: st.DataObject) -> None:
    seed = CORPUS[data.draw(st.integers(0, len(CORPUS) - 1))].read_bytes()
    (_fresh_results(workdir) / "shard-1-run-1.xml").write_bytes(data.draw(mutated(seed)))
    _run_report(workdir)


MANIFEST = {
    "version": 1, "shards": 2, "repeat": 2, "until_failure": False, "server": "ours",
    "server_log": "server-shard-1.jsonl", "tests": {"tests/test_ok.py::test_a": 1, "tests/test_ok.py::test_b": 2},
    "max_connections": 300, "workers": 2,
}  # fmt: skip


@given(data=st.data())
def test_fuzz_manifest_never_crashes_the_report(workdir: Path, data: st.DataObject) -> None:
    results = _fresh_results(workdir)
    (results / "shard-1-run-1.xml").write_bytes(PASSING)
    if data.draw(st.booleans()):
        raw = json.dumps(data.draw(json_mutated(MANIFEST))).encode()
    else:
        raw = data.draw(mutated(json.dumps(MANIFEST).encode()))
    (results / "manifest.json").write_bytes(raw)
    _run_report(workdir, manifest=results / "manifest.json")


JSONLOG = (
    '{"timestamp":"2026-11-25 17:56:45.748 UTC","user":"postgres","dbname":"test","pid":4242,'
    '"error_severity":"ERROR","state_code":"2BP01","message":"cannot drop table workspaces",'
    '"detail":"constraint x on table y depends on table workspaces","statement":"DROP TABLE workspaces",'
    '"application_name":"tests/test_ws.py::test_drop","backend_type":"client backend"}'
)
CSVLOG = (
    '2026-11-25 17:56:45.748 UTC,"postgres","test",4242,"127.0.0.1:5",6b0f.2ad8,1,"DROP TABLE",'
    '2026-11-25 17:56:45 UTC,3/4,0,ERROR,2BP01,"cannot drop table workspaces","detail",,,,,'
    '"DROP TABLE workspaces",,,"tests/test_ws.py::test_drop","client backend",,0'
)


@given(data=st.data())
def test_fuzz_server_log_parses_to_events_or_problems(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["json-structure", "json-bytes", "csv-bytes"]))
    if kind == "json-structure":
        text = json.dumps(data.draw(json_mutated(json.loads(JSONLOG))))
    else:
        seed = (JSONLOG if kind == "json-bytes" else CSVLOG).encode()
        text = data.draw(mutated(seed + b"\n" + seed)).decode("utf-8", "replace")
    events, problems = parse_server_log(text, "server.jsonl")
    assert isinstance(events, tuple) and len(problems) <= 6


@given(data=st.data())
def test_fuzz_server_log_in_the_report(workdir: Path, data: st.DataObject) -> None:
    results = _fresh_results(workdir)
    (results / "shard-1-run-1.xml").write_bytes(PASSING)
    name = data.draw(st.sampled_from(["server-shard-1.jsonl", "server-shard-1.csv"]))
    seed = (JSONLOG if name.endswith("jsonl") else CSVLOG).encode()
    (results / name).write_bytes(data.draw(mutated(seed + b"\n" + seed)))
    _run_report(workdir)


TOML_VALUES = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "0",
            "1.5",
            '"2m"',
            '"90s"',
            '"x"',
            "true",
            "[]",
            '["a"]',
            "{}",
            "{a = 1}",
            '"1e999h"',
            '"' + "9" * 400 + 'h"',
        ]
    ),
)
TOML_KEYS = st.sampled_from(
    ["fail-on", "title", "expect-files", "details-per-cause", "budgets", "categories", "classes", "tool",
     "unknown", "stability", "suite", "warn-at", "regression-ratio", "average-test", "db-test-action"]
)  # fmt: skip


@st.composite
def toml_text(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        table = draw(st.sampled_from(["", "[tool]", "[tool.db-test-action]", "[tool.db-test-action.budgets]",
                                      "[tool.db-test-action.categories]", "[tool.db-test-action.stability]"]))  # fmt: skip
        if table:
            lines.append(table)
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f'"{draw(TOML_KEYS)}" = {draw(TOML_VALUES)}')
    return "\n".join(lines) + "\n"


@given(text=toml_text())
def test_fuzz_config_is_a_value_or_a_one_line_error(workdir: Path, text: str) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    path = workdir / "config" / "pyproject.toml"
    path.write_text(text)
    try:
        table, where = load_table(path, workdir)
        resolve_report_config({}, {}, table, where)
    except DbTestActionError as exc:
        assert _tolerated(exc) and "\n" not in str(exc)


EVENT = {
    "action": "completed",
    "pull_request": {"number": 7},
    "issue": {"number": 7, "pull_request": {"url": "x"}},
    "workflow_run": {
        "event": "pull_request",
        "pull_requests": [{"number": 7, "base": {"repo": {"url": "https://api/repos/o/r"}}}],
        "head_repository": {"owner": {"login": "fork"}},
        "head_branch": "main",
        "head_sha": "abc",
    },
}


@given(data=st.data())
def test_fuzz_event_payload_is_a_pr_or_none(workdir: Path, data: st.DataObject) -> None:
    path = workdir / "event.json"
    if data.draw(st.booleans()):
        path.write_text(json.dumps(data.draw(json_mutated(EVENT))))
    else:
        path.write_bytes(data.draw(mutated(json.dumps(EVENT).encode())))
    try:
        payload = read_event(str(path))
    except DbTestActionError as exc:
        assert _tolerated(exc)
        return
    result = pull_request_from_event(payload, data.draw(st.sampled_from([None, "o/r"])))
    assert result is None or type(result) is int or hasattr(result, "sha")


@pytest.fixture(scope="module")
def base_seed(workdir: Path) -> dict:
    results = workdir / "results"
    for path in results.iterdir():
        path.unlink()
    (results / "shard-1-run-1.xml").write_bytes((ROOT / "data" / "junit" / "phases-reruns.xml").read_bytes())
    report_cmd.run(_report_args([str(results)], json=workdir / "seed.json"), env={}, cwd=workdir)
    return read_json(workdir / "seed.json", "--json")


@given(data=st.data())
def test_fuzz_base_report_never_crashes_the_report(
    workdir: Path, base_seed: dict, data: st.DataObject
) -> None:
    results = _fresh_results(workdir)
    (results / "shard-1-run-1.xml").write_bytes(PASSING)
    base = workdir / "base.json"
    if data.draw(st.booleans()):
        base.write_text(json.dumps(data.draw(json_mutated(base_seed))))
    else:
        base.write_bytes(data.draw(mutated(json.dumps(base_seed).encode())))
    _run_report(workdir, base=base)


def _history_seed() -> str:
    rng = random.Random(13)
    ids = [f"tests/test_{i // 10}.py::test_{i}" for i in range(40)]
    nights = []
    for n in range(3):
        counts = {t: TestCounts(3, 3 - (rng.random() < 0.1), 0, 0, 0, 0) for t in ids}
        night = night_from_counts(f"2026-11-0{n + 1}", (True, False, True), counts, {"deadlock": 1})
        pair = Conflict((ids[0], ids[1 + n]), "workspaces_pkey" if n else None, "unique-violation", n + 1)
        nights.append(dataclasses.replace(night, conflicts=(pair,)))
    return dump_history(nights)


HISTORY = _history_seed()


@given(data=st.data())
def test_fuzz_history_is_nights_or_a_one_line_error(workdir: Path, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        lines = HISTORY.splitlines()
        index = data.draw(st.integers(0, len(lines) - 1))
        lines[index] = json.dumps(data.draw(json_mutated(json.loads(lines[index]))))
        text = "\n".join(lines)
    else:
        text = data.draw(mutated(HISTORY.encode())).decode("utf-8", "replace")
    try:
        parse_history(text, "history.jsonl")
    except DbTestActionError as exc:
        assert _tolerated(exc) and "\n" not in str(exc)
    _run_stability(workdir, text)


def _run_stability(workdir: Path, history: str) -> None:
    """The stability command, in process, on a passing night and this history: exit 0/1/2, tonight's
    outputs written, never an exception (an unreadable history is a problem, kept as it is)."""
    results = _fresh_results(workdir)
    (results / "shard-1-run-1.xml").write_bytes(PASSING)
    path = workdir / "history.jsonl"
    path.write_text(history, encoding="utf-8")
    outputs = (workdir / "s.md", workdir / "s.json")
    for out in outputs:
        out.unlink(missing_ok=True)
    argv = ["stability", str(results), "--config", str(EMPTY_CONFIG), "--history", str(path),
            "--night", "2026-11-09", "--markdown", str(outputs[0]), "--json", str(outputs[1])]  # fmt: skip
    args = build_parser(load=("stability",)).parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = stability_cmd.run(args, env={}, cwd=workdir)
    assert code in (0, 1, 2)
    assert all(out.exists() for out in outputs)


def test_seeds_are_valid_inputs(workdir: Path) -> None:
    """The fuzzers start from inputs that parse cleanly, so their mutations explore near real files."""
    validate_manifest(MANIFEST, "m")
    assert parse_server_log(JSONLOG, "x")[0] and parse_server_log(CSVLOG, "x")[0]
    assert pull_request_from_event(EVENT, "o/r") == 7
    assert len(parse_history(HISTORY, "h")) == 3
    assert parse_history(HISTORY, "h")[2].conflicts[0].count == 3  # the conflicts round-trip too


@pytest.mark.parametrize("key", ["max_connections", "workers"])
@pytest.mark.parametrize("value", [0, -1, True, "300", 1.5, 10**7])
def test_manifest_capacity_must_be_a_plain_count(key: str, value: object) -> None:
    """The doctor multiplies these: a bool, a string or an absurd count makes the manifest invalid."""
    with pytest.raises(DbTestActionError, match=r"^m: not a runner manifest"):
        validate_manifest({**MANIFEST, key: value}, "m")


@pytest.mark.parametrize("shard", [0, -3, 3, True, 10**29, "1"])
def test_a_planned_test_must_name_a_shard_of_the_manifest(shard: object) -> None:
    """A test planned into a shard that does not exist could never report: the manifest is invalid."""
    tests = {"tests/test_ok.py::test_a": 1, "tests/test_ok.py::test_b": shard}
    with pytest.raises(DbTestActionError, match=r"^m: not a runner manifest"):
        validate_manifest({**MANIFEST, "tests": tests}, "m")


@pytest.mark.parametrize("count", [10**20, 10**300, 2**64], ids=["1e20", "1e300", "2^64"])
@pytest.mark.parametrize("field", ["clean", "odd"])
def test_absurd_counts_in_the_history_are_a_problem_not_a_crash(
    workdir: Path, field: str, count: int
) -> None:
    """Counts past int64 (orjson) or float (the Wilson interval) ranges: the history is refused, named."""
    lines = HISTORY.splitlines()
    night = json.loads(lines[1])
    if field == "clean":
        night["clean"][0] = count
    else:
        night["odd"][0][1] = count
    lines[1] = json.dumps(night)
    with pytest.raises(DbTestActionError, match="counts must be 6 whole numbers from 0 to"):
        parse_history("\n".join(lines), "history.jsonl")
    _run_stability(workdir, "\n".join(lines))
