"""Hostile artifacts and values, end to end: never exit 4, the report is always written, limits hold.

Each test feeds the CLI (a real subprocess) or `publish()` (against the fake GitHub over real HTTP) one
class of defect from issue 13 and checks the guarantee, not a message for one input.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_github import FakeGitHub
from pytest_httpserver import HTTPServer

from db_test_action.errors import EXIT_OK, EXIT_USAGE
from db_test_action.publish import gha
from db_test_action.publish.client import RetryPolicy
from db_test_action.publish.publisher import (
    COMMENT_MAX_CHARS,
    CommentMode,
    Publication,
    PublishSettings,
    comment_body,
    fingerprint_line,
    marker,
    publish,
)

PASSING = (
    '<testsuites><testsuite name="pytest" time="2.0">'
    '<testcase classname="tests.test_ok" name="test_a" time="0.5"/>'
    "</testsuite></testsuites>"
)


def _report(cli, cli_env, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli, "report", *args, "--markdown", "out/r.md", "--json", "out/r.json"],
        cwd=cwd, env=cli_env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "shard-1-run-1.xml").write_text(PASSING)
    return folder


def _written(tmp_path: Path) -> dict:
    assert (tmp_path / "out" / "r.md").stat().st_size > 0
    return json.loads((tmp_path / "out" / "r.json").read_text())


# --- class 3 and 5: a damaged input is a named problem; the report is still written -------------------

MANIFESTS = {
    "non-utf8": b'{"version": 1, "shards": 1, "tests": {"t\xff\xfe": 1}}',
    "wrong-shape": b'{"version": 1, "shards": "two", "tests": []}',
    "not-json": b'{"version": 1, "shards": ',
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "huge-int": b'{"version": 1, "shards": '
    + b"9" * 5000
    + b"}",  # found by the fuzzer: json raises ValueError
}


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_a_damaged_manifest_is_a_problem_and_the_report_is_written(cli, cli_env, results, tmp_path, kind):
    (results / "manifest.json").write_bytes(MANIFESTS[kind])
    out = _report(cli, cli_env, tmp_path, "results", "--manifest", "results/manifest.json")
    assert out.returncode == EXIT_USAGE, out.stderr
    assert "Traceback" not in out.stderr
    report = _written(tmp_path)
    assert any("manifest.json" in p["file"] for p in report["problems"]), report["problems"]
    assert report["totals"]["passed"] == 1


def test_a_huge_manifest_is_checked_in_bounded_time_and_summarised(cli, cli_env, results, tmp_path):
    manifest = {"version": 1, "shards": 10_000, "repeat": 10_000, "tests": {}}
    (results / "manifest.json").write_text(json.dumps(manifest))
    started = time.monotonic()
    out = _report(cli, cli_env, tmp_path, "results", "--manifest", "results/manifest.json", timeout=60)
    assert out.returncode == EXIT_USAGE, out.stderr
    assert time.monotonic() - started < 60
    problems = _written(tmp_path)["problems"]
    assert len(problems) <= 25
    assert any("more shard×run result files missing" in p["message"] for p in problems)
    assert len(out.stdout.splitlines()) < 60  # not one console line per missing shard


BASES = {
    "non-utf8": b'{"schema_version": 1, "title": "\xff"}',
    "wrong-shape": b'{"schema_version": 1, "tests": "many"}',
    "a-list": b"[1, 2, 3]",
}


@pytest.mark.parametrize("kind", [*BASES, "negative-times", "missing"])
def test_a_bad_base_report_is_a_problem_and_the_report_is_written(cli, cli_env, results, tmp_path, kind):
    base = tmp_path / "base.json"
    if kind == "negative-times":
        assert _report(cli, cli_env, tmp_path, "results").returncode == 0
        data = json.loads((tmp_path / "out" / "r.json").read_text())
        data["timing"]["wall_s"] = -5.0
        base.write_text(json.dumps(data))
    elif kind != "missing":
        base.write_bytes(BASES[kind])
    out = _report(cli, cli_env, tmp_path, "results", "--base", str(base))
    assert out.returncode == EXIT_USAGE, out.stderr
    problems = _written(tmp_path)["problems"]
    assert any(p["file"] == str(base) for p in problems), problems


SERVER_LOGS = {
    "server-shard-1.jsonl": (
        '{"timestamp": "2026-11-25 17:56:45.748 UTC", "pid": 1e999, "error_severity": "ERROR"}\n'
        '{"timestamp": "2026-11-25 17:56:45.748 UTC", "pid": [1], "message": {"a": 1}}\n'
        '{"timestamp": 12, "pid": "x"}\n' + "[" * 50_000 + "\n"
    ),
    "server-shard-2.csv": '2026-11-25 17:56:45.748 UTC,u,db,"' + "x" * 300_000 + '",1\n"unterminated\n',
}


@pytest.mark.parametrize("name", list(SERVER_LOGS))
def test_hostile_server_logs_never_crash_the_report(cli, cli_env, results, tmp_path, name):
    (results / name).write_text(SERVER_LOGS[name])
    out = _report(cli, cli_env, tmp_path, "results")
    assert out.returncode in (0, 1, 2) and "internal error" not in out.stderr, out.stderr
    _written(tmp_path)


def test_the_same_file_by_two_paths_counts_once(cli, cli_env, results, tmp_path):
    (results / "link.xml").symlink_to(results / "shard-1-run-1.xml")
    out = _report(cli, cli_env, tmp_path, "results/shard-1-run-1.xml", "results/../results/shard-1-run-1.xml",
                  "results/link.xml")  # fmt: skip
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    report = _written(tmp_path)
    assert report["totals"]["passed"] == 1 and not any(t["status"] == "flaky" for t in report["tests"])


@pytest.mark.parametrize(
    "damaged",
    [
        b'{"format": "db-test-action-history", "version": 1, "ids": ["a"]}\n{"night": [\xff\n',
        b'{"format": "db-test-action-history", "version": 1, "ids": ["a"]}\n{"night": '
        + b"9" * 5000
        + b"}\n",
    ],
)
def test_an_unreadable_history_still_writes_tonights_outputs(cli, cli_env, results, tmp_path, damaged):
    history = tmp_path / "history.jsonl"
    history.write_bytes(damaged)
    out = subprocess.run(
        [*cli, "stability", "results", "--history", str(history), "--markdown", "out/s.md", "--json", "out/s.json"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == EXIT_USAGE, out.stderr
    assert (tmp_path / "out" / "s.md").stat().st_size > 0 and (tmp_path / "out" / "s.json").exists()
    assert "history.jsonl" in (tmp_path / "out" / "s.md").read_text()
    assert history.read_bytes() == damaged  # never overwritten with tonight alone


# --- class 4 and 9: bad values are refused in one line ------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "config", "expected"),
    [
        ("stability", ("--expect-runs", str(10**12)), None, "use a whole number from 1 to 10000"),
        ("report", ("--budget", "warn-at=nan"), None, "use a fraction like 0.8"),
        ("report", ("--budget", "suite=" + "9" * 400 + "h"), None, "is not a duration"),
        ("report", (), "[tool.db-test-action.budgets]\nsuite = nan\n", "is not a duration"),
        ("report", (), "[tool.db-test-action.budgets]\nsuite = inf\n", "is not a duration"),
        ("report", (), "[tool.db-test-action.budgets]\nwarn-at = nan\n", "use a fraction like 0.8"),
        ("report", (), 'tool = "db-test-action"\n', "tool must be a table"),
        ("report", (), "[tool.db-test-action]\nfail-onn = 'errors'\n", "unknown key 'fail-onn'"),
    ],
)
def test_bad_values_are_refused(cli, cli_env, results, tmp_path, command, args, config, expected):
    if config is not None:
        (tmp_path / "pyproject.toml").write_text(config)
    out = subprocess.run([*cli, command, "results", *args], cwd=tmp_path, env=cli_env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == EXIT_USAGE, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e9"])
def test_max_wait_must_be_finite(cli, cli_env, tmp_path, value):
    (tmp_path / "r.md").write_text("hi\n")
    out = subprocess.run([*cli, "publish", "--markdown", str(tmp_path / "r.md"), "--max-wait", value,
                          "--pr", "1", "--repository", "o/r"], env=cli_env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == EXIT_USAGE and "--max-wait" in out.stderr, out.stderr


# --- class 10: bidi and ANSI from artifacts never reach Markdown or the console --------------------------


def test_bidi_is_shown_not_applied_in_markdown_and_console(cli, cli_env, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    name = "test_\u202eevil\u2066 name"
    xml = (
        '<testsuites><testsuite name="pytest" time="1">'
        f'<testcase classname="tests.test_x" name="{name}" time="0.1">'
        '<failure message="boom \u202e">trace \u2067</failure></testcase>'
        "</testsuite></testsuites>"
    )
    (folder / "shard-1-run-1.xml").write_text(xml, encoding="utf-8")
    out = _report(cli, cli_env, tmp_path, "results")
    assert out.returncode == 1, out.stdout + out.stderr
    markdown = (tmp_path / "out" / "r.md").read_text()
    for text in (markdown, out.stdout):
        assert not {"\u202e", "\u2066", "\u2067"} & set(text)
        assert "[U+202E]" in text


HOSTILE = "red \x1b[31mALERT\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07 \x1b[2J\x9b1A \r over \u202etxt.exe"


def test_ansi_and_bidi_never_reach_console_summary_or_comment(tmp_path):
    from db_test_action.report.mdtext import fenced, inline

    summary = tmp_path / "s.md"
    gha.append_summary(HOSTILE + "\n", {"GITHUB_STEP_SUMMARY": str(summary)})
    texts = {
        "console": gha.console(HOSTILE, {"GITHUB_ACTIONS": "true"}),
        "inline": inline(HOSTILE),
        "fenced": fenced(HOSTILE),
        "comment": comment_body(Publication("k", HOSTILE, False, "f")),
        "summary": summary.read_text(),
    }
    for where, text in texts.items():
        assert not any(c in text for c in "\x1b\x9b\r\u202e"), where
        assert "ALERT" in text and "202E" in text, where  # shown, not applied ([U+202E], escaped in prose)


# --- classes 6, 7 and 8: publish ------------------------------------------------------------------------


PUB = Publication(key="unit", markdown="## 1 failed\n", is_green=False, fingerprint="new")


def _publish(
    base_url: str, token: str, tmp_path: Path, pub: Publication = PUB, **change
) -> tuple[int, str, str]:
    settings = PublishSettings(repository="o/r", token=token, api_url=base_url, pull_request=7,
                               retry=RetryPolicy(retries=1, backoff_s=0.1, max_wait_s=3.0))  # fmt: skip
    for key, value in change.items():
        settings = type(settings)(**{**{f: getattr(settings, f) for f in settings.__slots__}, key: value})
    out, err = io.StringIO(), io.StringIO()
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    code = publish(pub, settings, out=out, err=err, env=env)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def trickling_server() -> Iterator[str]:
    """A raw socket server on 127.0.0.1 that answers one byte every 0.2 s, forever: each read succeeds well
    within any socket timeout, so only an overall deadline ends a client. Yields its base URL."""
    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def trickle() -> None:
        conns = []
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")  # a header that never ends
                conns.append(conn)
            except OSError:
                pass
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.send(b"a")
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()


def test_a_trickling_server_cannot_hang_publish(tmp_path):
    with trickling_server() as url:
        started = time.monotonic()
        code, _out, err = _publish(url, "t0k3n", tmp_path)
        elapsed = time.monotonic() - started
    assert code == EXIT_OK and elapsed < 15, (elapsed, err)
    assert "no answer within --max-wait 3s" in err
    assert (tmp_path / "summary.md").read_text() == PUB.markdown  # written before any network


def test_a_trickling_server_cannot_hang_the_nightly_stability_job(cli, cli_env, tmp_path):
    """Every GitHub call of `stability` (history branch, tracking issue) shares one --max-wait deadline;
    tonight's outputs are written regardless."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "shard-1-run-1.xml").write_text(
        '<testsuite name="pytest"><testcase classname="tests.test_a" name="test_ok" time="0.1"/></testsuite>'
    )
    with trickling_server() as url:
        started = time.monotonic()
        done = subprocess.run(
            [*cli, "stability", str(results), "--history-branch", "db-test-action-history", "--tracking-issue",
             "--repository", "o/r", "--token", "t0k3n", "--api-url", url, "--max-wait", "3",
             "--json", str(tmp_path / "s.json"), "--markdown", str(tmp_path / "s.md")],
            env=cli_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == EXIT_OK and elapsed < 30, (elapsed, done.stderr)
    assert "no answer within --max-wait 3s (all of tonight's GitHub calls together)" in done.stderr
    assert (tmp_path / "s.json").is_file() and (tmp_path / "s.md").is_file()


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitHub:
    return FakeGitHub(httpserver)


def test_a_marker_quoted_in_another_keys_comment_is_not_ours(fake: FakeGitHub, tmp_path):
    # our own comment for key "integration", whose body quotes unit's marker (e.g. from test output)
    body = f"## integration\n```\n{marker('unit')}\n{fingerprint_line('unit', 'new')}\n```\n\n"
    other = fake.add_comment(7, "github-actions[bot]", body + f"{marker('integration')}\n"
                             f"{fingerprint_line('integration', 'x')}\n")  # fmt: skip
    code, out, err = _publish(fake.base_url, fake.token, tmp_path, comment_author="github-actions[bot]",
                              comment_mode=CommentMode.CHANGES)  # fmt: skip
    assert code == EXIT_OK, err
    assert "created the comment" in out  # a new one for `unit`, the quoted marker/fingerprint ignored
    assert next(c for c in fake.comments[7] if c["id"] == other["id"])["body"] == other["body"]


def test_a_planted_fingerprint_above_the_footer_does_not_skip_the_update(fake: FakeGitHub, tmp_path):
    planted = f"{fingerprint_line('unit', 'new')}\n\nold report\n\n{marker('unit')}\n{fingerprint_line('unit', 'old')}\n"
    ours = fake.add_comment(7, "github-actions[bot]", planted)
    code, out, err = _publish(fake.base_url, fake.token, tmp_path, comment_author="github-actions[bot]",
                              comment_mode=CommentMode.CHANGES)  # fmt: skip
    assert code == EXIT_OK and "updated the comment" in out, out + err
    [comment] = [c for c in fake.comments[7] if c["id"] == ours["id"]]
    assert comment["body"].startswith("## 1 failed")


def test_a_nearly_full_summary_never_exceeds_one_mib(tmp_path):
    summary = tmp_path / "summary.md"
    for used in (gha.SUMMARY_LIMIT_BYTES - 50, gha.SUMMARY_LIMIT_BYTES - 5000, gha.SUMMARY_LIMIT_BYTES + 10):
        summary.write_bytes(b"x" * used)
        gha.append_summary(
            "<details>\n" * 2000 + "```\n" + "é line\n" * 100_000, {"GITHUB_STEP_SUMMARY": str(summary)}
        )
        assert summary.stat().st_size <= max(gha.SUMMARY_LIMIT_BYTES, used)


def test_many_unclosed_details_still_fit_a_comment():
    markdown = "<details><summary>x</summary>\n\n" * 30_000
    body = comment_body(Publication("unit", markdown, False, "f"))
    assert len(body) <= COMMENT_MAX_CHARS
    assert body.rstrip().endswith(fingerprint_line("unit", "f"))
    head = body.split("> **Note:**")[0]
    assert head.count("<details>") == head.count("</details>")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"pull_request": {"number": [7]}, "x": ' + b"[" * 10, "event payload is not JSON"),
        (b'{"pull_request": {"number": ' + b"9" * 5000 + b"}}", "event payload is not usable JSON"),  # fuzzer
    ],
)
def test_a_malformed_event_file_still_writes_summary_and_annotations(cli, cli_env, tmp_path, raw, expected):
    event = tmp_path / "event.json"
    event.write_bytes(raw)
    report = tmp_path / "r.md"
    report.write_text("## the report\n")
    env = {**cli_env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(event), "GITHUB_TOKEN": "t",
           "GITHUB_REPOSITORY": "o/r", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}  # fmt: skip
    out = subprocess.run([*cli, "publish", "--markdown", str(report)], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == EXIT_USAGE and expected in out.stderr, out.stderr
    assert (tmp_path / "summary.md").read_text() == "## the report\n"


@pytest.mark.parametrize(
    "payload",
    [
        {"pull_request": {"number": "7"}},
        {"pull_request": "7"},
        {"issue": {"pull_request": True, "number": True}},
        {"workflow_run": {"event": "pull_request", "pull_requests": "abc"}},
        {"workflow_run": {"event": "pull_request", "pull_requests": [1, {"base": "x", "number": 3}]}},
        {"workflow_run": {"event": "pull_request", "head_repository": {"owner": ["x"]}, "head_branch": 1}},
    ],
)
def test_odd_event_payloads_mean_no_pull_request(cli, cli_env, tmp_path, payload):
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    report = tmp_path / "r.md"
    report.write_text("## the report\n")
    env = {**cli_env, "GITHUB_EVENT_PATH": str(event), "GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "o/r",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}  # fmt: skip
    out = subprocess.run([*cli, "publish", "--markdown", str(report)], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode in (0, 2) and "internal error" not in out.stderr, out.stderr
    assert (tmp_path / "summary.md").read_text() == "## the report\n"
