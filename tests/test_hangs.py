"""Time limits end to end: a real suite hangs on a real row lock; `run --timeout` / `--test-timeout`
snapshot the server, stop pytest (and its workers), and the report names the waiter, the statement
and the holder. A pytest that ignores SIGINT is killed and its streamed results still reach the report.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from hang_suite import DEAF, DEAF_TESTS, LOCKS, leftovers
from hypothesis import given, settings
from hypothesis import strategies as st

from db_test_action.junit.stream import merge_stream, parse_stream
from db_test_action.report.hangs import find_hangs, parse_snapshots

HOLD, WAIT = "test_locks.py::test_hold", "test_locks.py::test_wait"


def _suite(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _no_leftovers(marker: str) -> None:
    deadline = time.monotonic() + 20  # SIGKILLed processes may take a moment to be gone
    while (left := leftovers(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], left


def _report(cli, cli_env, results: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict, str]:
    md, js = results.parent / "report.md", results.parent / "report.json"
    cmd = [*cli, "report", str(results), "--markdown", str(md), "--json", str(js), *extra]
    proc = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=120)
    assert js.is_file(), proc.stderr
    return proc, json.loads(js.read_text()), md.read_text()


def _lock_env(cli_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], str]:
    sync = tmp_path / "sync"
    sync.mkdir()
    marker = f"dta-hang-{uuid.uuid4().hex}"
    return {**cli_env, "HANG_SYNC": str(sync), "DTA_TEST_MARKER": marker}, marker


def _the_wait(report: dict) -> dict:
    waits = [h for h in report["hangs"] if h["test_id"] == WAIT and h["waiting_on"]]
    assert waits, report["hangs"]
    return waits[0]


def test_suite_timeout_snapshots_the_lock_stops_every_worker_and_still_reports(
    cli, cli_env, tmp_path, data_root
):
    env, marker = _lock_env(cli_env, tmp_path)
    suite = _suite(tmp_path / "suite", {"test_locks.py": LOCKS})
    results = tmp_path / "results"
    cmd = [*cli, "run", "--data-root", str(data_root), "--workers", "2", "--timeout", "45s",
           "--stop-grace", "30s", "--results-dir", str(results), "--", "-p", "no:randomly", "-p", "no:cacheprovider"]  # fmt: skip
    run = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "stopped at the suite time limit (--timeout 45s)" in run.stderr
    _no_leftovers(marker)  # no pytest, no xdist worker, no postgres
    assert list(data_root.iterdir()) == []
    names = {p.name for p in results.iterdir()}
    assert {"shard-1-run-1.xml", "shard-1-run-1.jsonl", "shard-1-run-1.hang.json", "manifest.json"} <= names

    proc, report, md = _report(cli, cli_env, results)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    wait = _the_wait(report)
    assert wait["reason"] == "suite-timeout" and wait["worker"] in ("gw0", "gw1")
    assert wait["statement"] == "UPDATE accounts SET balance = balance - 1 WHERE id = 1"
    assert wait["waiting_on"].startswith("a row lock")
    assert wait["holder_test"] == HOLD and wait["holder_worker"] != wait["worker"]
    assert wait["holder_state"] == "idle in transaction"
    assert (wait["holder_since_phase"], wait["holder_since_fixture"]) == ("fixture", "seed")
    # Both tests are failures of their own (hung), not lost, and the Markdown says who waits for whom.
    hung = {t["test_id"]: t["problems"][0]["cause"]["key"] for t in report["tests"]}
    assert hung == {HOLD: "hang", WAIT: "hang"}
    assert f"`{WAIT}` ({wait['worker']}) waits for a row lock held by `{HOLD}`" in md
    assert "idle in transaction since" in md and "when its fixture `seed` ran" in md
    assert "hang: shard 1 run 1: test_locks.py::test_wait" in proc.stdout


def test_per_test_limit_snapshots_before_pytest_timeout_fails_the_test(cli, cli_env, tmp_path, pg_server):
    env, marker = _lock_env(cli_env, tmp_path)
    suite = _suite(tmp_path / "suite", {"test_locks.py": LOCKS})
    results = tmp_path / "results"
    cmd = [*cli, "run", "--database-url", pg_server.url(), "--workers", "2", "--test-timeout", "25s",
           "--timeout", "10m", "--results-dir", str(results), "--", "-p", "no:randomly"]  # fmt: skip
    run = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "reached --test-timeout (25s)" in run.stderr
    _no_leftovers(marker)
    snapshots = json.loads((results / "shard-1-run-1.hang.json").read_text())
    assert {s["reason"] for s in snapshots} == {"test-timeout"}

    proc, report, md = _report(cli, cli_env, results)
    assert proc.returncode == 1
    wait = _the_wait(report)
    assert (wait["reason"], wait["limit_s"], wait["holder_test"]) == ("test-timeout", 25.0, HOLD)
    assert wait["statement"].startswith("UPDATE accounts SET balance = balance - 1")
    # pytest-timeout failed both tests; their JUnit results are pytest's own
    causes = {t["test_id"]: t["problems"][0]["cause"]["key"] for t in report["tests"]}
    assert causes == {HOLD: "timeout", WAIT: "timeout"}
    assert "per-test time limit of 25 s" in md
    hold = next(h for h in report["hangs"] if h["test_id"] == HOLD)  # its own snapshot: not waiting, holding
    assert hold["worker"] in ("gw0", "gw1") and hold["waiting_on"] == ""
    assert (hold["holder_state"], hold["holder_since_fixture"]) == ("idle in transaction", "seed")


def test_pytest_ignoring_sigint_is_killed_and_report_dir_says_what_never_reported(
    cli, cli_env, tmp_path, pg_server
):
    marker = f"dta-hang-{uuid.uuid4().hex}"
    env = {**cli_env, "DTA_TEST_MARKER": marker}
    suite = _suite(
        tmp_path / "suite",
        {"conftest.py": DEAF, "test_deaf.py": DEAF_TESTS, "test_other.py": "def test_x():\n    pass\n"},
    )
    # The other module weighs as much as the deaf one: two modules, one per shard (deaf first).
    durations = {
        f"test_deaf.py::{n}": 1.0
        for n in ("test_one", "test_two", "test_three", "test_forever", "test_after")
    }
    (suite / "durations.json").write_text(json.dumps({**durations, "test_other.py::test_x": 5.0}))
    results = tmp_path / "results"
    cmd = [*cli, "run", "--database-url", pg_server.url(), "--shards", "2", "--shard", "1",
           "--durations", "durations.json", "--timeout", "40s", "--stop-grace", "3s",
           "--results-dir", str(results), "--", "-p", "no:randomly"]  # fmt: skip
    run = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "killed (it ignored SIGINT)" in run.stderr
    _no_leftovers(marker)
    manifest = json.loads((results / "manifest.json").read_text())
    assert (
        manifest["tests"]["test_other.py::test_x"] == 2 and manifest["tests"]["test_deaf.py::test_after"] == 1
    )
    junit = (results / "shard-1-run-1.xml").read_text()
    assert "pytest stopped at the time limit" in junit and "test_one" not in junit  # pytest wrote none

    proc, report, md = _report(cli, cli_env, results)  # no --manifest: DIR/manifest.json is used
    assert proc.returncode == 2, proc.stdout  # incomplete: a shard and a test never reported
    problems = "\n".join(f"{p['file']}: {p['message']}" for p in report["problems"])
    assert "missing: shard 2 run 1 of 2×1 wrote no results" in problems
    assert "shard 2: 1 of 1 planned tests never reported (test_other.py::test_x)" in problems
    assert "shard 1: 1 of 5 planned tests never reported (test_deaf.py::test_after)" in problems
    # The streamed results made it: two passed, one failed with its message, the hung one named.
    assert report["totals"]["passed"] == 2
    by_id = {t["test_id"]: t for t in report["tests"]}
    assert "assert (1 + 1) == 3" in by_id["test_deaf.py::test_two"]["problems"][0]["message"]
    assert by_id["test_deaf.py::test_forever"]["problems"][0]["cause"]["key"] == "hang"
    hang = next(h for h in report["hangs"] if h["test_id"] == "test_deaf.py::test_forever")
    assert hang["waiting_on"] == "" and hang["running_s"] is not None
    assert "not waiting on the server" in md and "never reported" in md


# --- untrusted files: fuzzed ---------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
_events = st.fixed_dictionaries(
    {"e": st.sampled_from(["start", "fixture", "call", "limit", "result", "other"]), "node": st.text(max_size=30)},
    optional={
        "at": _json_values, "worker": _json_values, "outcome": _json_values, "phase": _json_values,
        "line": _json_values, "shard": _json_values, "fixture": _json_values, "limit_s": _json_values,
        "duration": _json_values, "message": _json_values, "started_at": _json_values,
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_events | _json_values, max_size=12), st.text(max_size=40))
def test_streams_of_any_shape_never_crash_the_reader(lines, tail):
    text = "\n".join(json.dumps(x) for x in lines) + "\n" + tail
    stream = parse_stream(text, "shard-1-run-1.jsonl")
    for parsed in merge_stream(None, stream):
        assert all(r.test_id for r in parsed.rows)


@settings(max_examples=200, deadline=None)
@given(_json_values, st.lists(_events, max_size=6))
def test_snapshots_of_any_shape_never_crash_the_attribution(snapshot, events):
    for text in (
        json.dumps(snapshot),
        json.dumps([snapshot]),
        json.dumps([{"reason": "suite-timeout", "backends": [snapshot]}]),
    ):
        snapshots, _problems = parse_snapshots(text, "shard-1-run-1.hang.json")
        stream = parse_stream("\n".join(json.dumps(e) for e in events) + "\n", "shard-1-run-1.jsonl")
        find_hangs(snapshots, [stream])


def test_a_damaged_stream_line_is_a_problem_and_a_cut_last_line_is_not():
    good = json.dumps({"e": "result", "node": "t.py::a", "outcome": "passed", "at": 1.0})
    cut = parse_stream(good + "\n" + '{"e": "res', "shard-1-run-1.jsonl")
    assert cut.problem is None and [r.test_id for r in cut.results] == ["t.py::a"]
    damaged = parse_stream("{oops\n" + good + "\n", "shard-1-run-1.jsonl")
    assert damaged.problem is not None and damaged.problem.line == 1


@pytest.mark.parametrize("text", ["", "{}", "[1, 2]", '[{"reason": "x"}]', "nope"])
def test_bad_snapshot_files_are_named_problems(text):
    snapshots, problems = parse_snapshots(text, "shard-1-run-1.hang.json")
    assert snapshots == () and (problems or text == "[]")


def test_untrusted_names_in_a_hang_cannot_format_the_comment():
    from db_test_action.model import Hang
    from db_test_action.report.hangs import hang_sentence
    from db_test_action.report.mdtext import code, inline

    hang = Hang(
        reason="suite-timeout", limit_s=60, shard=1, run=1, test_id="t.py::test_x[`@octocat`]", worker="gw0",
        statement="UPDATE t SET a = '</code><img src=x>'", waiting_on="a row lock on <b>@team</b>",
        holder_test="t.py::test_y", holder_worker="gw1", holder_state="idle in transaction",
        holder_since=1_700_000_000.0, holder_since_phase="fixture", holder_since_fixture="seed`x",
    )  # fmt: skip
    text = hang_sentence(hang, lambda s: code(s, 160, in_table=False), inline)
    assert (
        "<b>" not in text and "`UPDATE t SET a = '</code><img src=x>'`" in text
    )  # inside a code span: inert
    assert "&lt;b&gt;" in text and "@\u200dteam" in text  # prose is escaped and mentions defused
    assert "``seed`x``" in text  # a backtick in a fixture name cannot close its code span


def test_a_per_test_timeout_annotation_carries_what_the_test_waited_on():
    from db_test_action.config.report import resolve_report_config
    from db_test_action.model import Hang
    from db_test_action.report.build import build_report
    from db_test_action.report.render import annotations_for

    result = {"e": "result", "node": "t.py::test_x", "worker": "gw1", "outcome": "failed", "phase": "call",
              "message": "Failed: Timeout >25.0s", "at": 2.0}  # fmt: skip
    stream = parse_stream(json.dumps(result) + "\n", "shard-1-run-1.jsonl")
    hang = Hang(reason="test-timeout", limit_s=25, shard=1, run=1, test_id="t.py::test_x", worker="gw1",
                statement="UPDATE accounts SET balance = 0", waiting_on="a row lock", holder_test="t.py::test_y")  # fmt: skip
    report = build_report(merge_stream(None, stream), resolve_report_config({}, {}, {}, ""), hangs=[hang])
    (note,) = [a for a in annotations_for(report) if a.title.endswith("t.py::test_x")]
    assert "Failed: Timeout >25.0s" in note.message
    assert "at the time limit: t.py::test_x (gw1) waits for a row lock held by t.py::test_y" in note.message
