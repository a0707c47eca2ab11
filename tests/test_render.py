"""Markdown/console/annotations/fingerprint rendering: golden files, GitHub's size limit, escaping, JSON round trip.

Golden files sit next to their input in tests/data/junit/; `UPDATE_GOLDEN=1` rewrites them (review the diff).
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db_test_action.config.report import resolve_report_config
from db_test_action.junit.files import parse_junit_file
from db_test_action.junit.parse import parse_junit_bytes
from db_test_action.model import Level, Timing
from db_test_action.report.build import build_report
from db_test_action.report.codec import report_from_dict, report_to_dict
from db_test_action.report.mdtext import ZWJ, cell, escape_html, fenced
from db_test_action.report.render import annotations_for, render_console, render_markdown, report_fingerprint

DATA = Path(__file__).parent / "data" / "junit"


def _golden(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path.name} is missing; UPDATE_GOLDEN=1 writes it (then review the diff)"
    assert actual == path.read_text(encoding="utf-8"), f"{path.name} differs; UPDATE_GOLDEN=1 to rewrite"


@pytest.fixture
def phases_report():
    config = resolve_report_config({}, {}, {"budgets": {"suite": "2m", "categories": {"phases": "1s"}}})
    return build_report([parse_junit_file(DATA / "phases-reruns.xml", "shard-1-run-1.xml")], config)


def test_markdown_golden(phases_report):
    _golden(DATA / "phases-reruns.expected.md", render_markdown(phases_report))


def test_json_golden_and_round_trip(phases_report):
    data = report_to_dict(phases_report)
    _golden(DATA / "phases-reruns.expected.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    assert data["schema_version"] == 1
    assert report_from_dict(json.loads(json.dumps(data))) == phases_report


def test_report_from_dict_names_bad_fields(phases_report):
    data = report_to_dict(phases_report)
    with pytest.raises(Exception, match=r"base.json: schema_version 2 is not supported"):
        report_from_dict({**data, "schema_version": 2}, "base.json")
    broken = json.loads(json.dumps(data))
    del broken["totals"]["name"]
    with pytest.raises(Exception, match=r"base.json.totals: missing field 'name'"):
        report_from_dict(broken, "base.json")
    broken = json.loads(json.dumps(data))
    broken["verdict"] = "meh"
    with pytest.raises(Exception, match=r"base.json.verdict: 'meh' is not a Verdict"):
        report_from_dict(broken, "base.json")


def test_console_summary(phases_report):
    text = render_console(phases_report)
    assert text.splitlines()[0] == (
        "Test results: FAILED — 10 tests: 3 passed, 3 failed, 1 setup error, 2 teardown errors, 2 skipped"
    )
    assert "gate (fail on errors, failures): FAILED (errors, failures)" in text


def test_annotations_rank_fixture_errors_and_frequent_causes_first(phases_report):
    notes = annotations_for(phases_report)
    assert [n.title.split(":")[0] for n in notes[:3]] == [
        "setup error (connection)",
        "teardown error (dependent-objects)",
        "failed (other)",
    ]
    setup = notes[0]
    # A fixture error in conftest.py points at the test's own `def` (1-based), where a reviewer looks.
    assert (setup.level, setup.file, setup.line) == (Level.ERROR, "tests/test_phases.py", 10)
    assert "Connection refused or closed:" in setup.message
    assert [n.rank for n in notes] == sorted(n.rank for n in notes)
    both = [n for n in notes if n.title.endswith("test_fails_and_teardown_error")]
    assert [n.title.split(":")[0] for n in both] == ["failed (other)"]  # one per test, its own column


def test_fingerprint_ignores_timing_but_not_outcomes(phases_report):
    same = replace(phases_report, timing=replace(phases_report.timing, wall_s=99.0), files=("other.xml",))
    assert report_fingerprint(same) == report_fingerprint(phases_report)
    fewer = replace(phases_report, tests=phases_report.tests[1:])
    assert report_fingerprint(fewer) != report_fingerprint(phases_report)
    assert re.fullmatch(r"[0-9a-f]{16}", report_fingerprint(phases_report))


# --- escaping ---------------------------------------------------------------------------------------------

HOSTILE = "@octocat <img src=x onerror=alert(1)> | **bold** [link](http://evil) `tick` <!-- </details>"


def test_cells_neutralise_markdown_html_and_mentions():
    out = cell(HOSTILE, 500)
    assert "<" not in out and ">" not in out
    assert "@" + ZWJ + "octocat" in out
    assert re.search(r"(?<!\\)\|", out) is None  # every pipe escaped: the table keeps its columns
    assert "\\*\\*bold\\*\\*" in out and "\\[link\\]" in out and "\\`tick\\`" in out


def test_code_blocks_cannot_be_escaped_from():
    block = fenced("before\n```\n</details>\n````more")
    fence = block.split("\n", 1)[0][: -len("text")]
    assert fence == "`````"
    assert block.endswith("\n" + fence)


def _xml_with(name: str, message: str, count: int = 1, cls: str = "tests.test_evil") -> bytes:
    from xml.sax.saxutils import escape, quoteattr

    cases = "".join(
        f'<testcase classname={quoteattr(cls)} name={quoteattr(f"{name}{i}")} time="0.1">'
        f"<error message={quoteattr('failed on setup with ' + chr(34) + message + chr(34))}>E   {escape(message)}</error>"
        "</testcase>"
        for i in range(count)
    )
    return f'<testsuite name="pytest">{cases}</testsuite>'.encode()


def test_hostile_names_and_messages_are_escaped_in_the_comment():
    report = build_report(
        [parse_junit_bytes(_xml_with(HOSTILE, HOSTILE), "x.xml")], resolve_report_config({}, {}, {})
    )
    md = render_markdown(report)
    # Code spans and fenced blocks show text literally (no HTML, no mentions), so they may keep it exact.
    outside_code = re.sub(r"(`{3,})text\n.*?\n\1", "", md, flags=re.S)
    outside_code = re.sub(r"(`+) ?.*? ?\1", "", outside_code)
    assert "<img" not in outside_code and "<!--" not in outside_code and "</details> " not in outside_code
    assert "@octocat" not in outside_code
    assert "&lt;img" in outside_code
    for line in md.splitlines():
        if line.startswith("| ") and "octocat" in line:  # the root-cause row with the hostile example
            assert len(re.findall(r"(?<!\\)\|", line)) == 5  # 4 columns → 5 unescaped pipes


# --- one cause, many tests; and the size limit ------------------------------------------------------------

PGCRYPTO = (
    "sqlalchemy.exc.IntegrityError: (sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class "
    "'asyncpg.exceptions.UniqueViolationError'>: duplicate key value violates unique constraint "
    '"pg_extension_name_index"'
)


def test_one_cause_raised_a_hundred_times_is_one_row_and_a_few_details():
    xml = _xml_with("test_case_", PGCRYPTO, count=100, cls="tests.test_workspace_isolation")
    report = build_report([parse_junit_bytes(xml, "x.xml")], resolve_report_config({}, {}, {}))
    (group,) = report.causes
    assert (group.cause.key, group.tests, group.details) == (
        "concurrent-ddl",
        100,
        ("pg_extension_name_index",),
    )
    md = render_markdown(report)
    assert md.count("<details>") == 5
    assert "… and 95 more with the same cause" in md
    assert md.count("| **Concurrent DDL") == 1


def test_huge_reports_stay_under_the_github_limit_and_say_what_was_cut():
    parts = []
    for i in range(400):
        message = f"AssertionError: distinct problem {i} " + "x" * 5000
        parts.append(_xml_with(f"test_{i}_" + "n" * 300, message, count=1, cls=f"tests.test_mod{i % 50}"))
    xml = b"<testsuites>" + b"".join(p for p in parts) + b"</testsuites>"
    classes = [
        {"key": f"c{i}", "pattern": f"distinct problem {i} ", "title": f"Class {i}"} for i in range(400)
    ]
    config = resolve_report_config({}, {}, {"classes": classes})
    report = build_report([parse_junit_bytes(xml, "big.xml")], config)
    assert len(report.causes) == 400
    md = render_markdown(report)
    assert len(md) <= 65536
    assert "Shortened to fit GitHub's comment limit" in md or "cut here to fit" in md
    small = render_markdown(report, max_chars=5000)
    assert len(small) <= 5000 and small.rstrip().endswith("the job log for the rest._")


def test_a_level_that_only_shortens_server_excerpts_is_skipped_when_there_are_none():
    """Without server excerpts (or a long quarantine list) the server level is the page before plus a
    note: it cannot fit where that one did not, so the renderer goes straight to fewer tests per cause."""
    from db_test_action.report.markdown import _can_be_shorter, _document, levels
    from db_test_action.report.textsafety import neutralize

    parts = [
        _xml_with(
            f"test_{i}", f"AssertionError: distinct {i} " + "x" * 3000, count=1, cls=f"tests.test_m{i % 9}"
        )
        for i in range(28)
    ]
    classes = [{"key": f"c{i}", "pattern": f"distinct {i} ", "title": f"Class {i}"} for i in range(28)]
    report = build_report(
        [parse_junit_bytes(b"<testsuites>" + b"".join(parts) + b"</testsuites>", "big.xml")],
        resolve_report_config({}, {}, {"classes": classes}),
    )
    full, server_level, fewer = (
        neutralize(_document(report, d)) for d in levels(report.details_per_cause)[:3]
    )
    assert len(full) > 65536 and len(server_level) > len(full) and len(fewer) <= 65536
    assert render_markdown(report) == fewer
    first, second, third = levels(report.details_per_cause)[:3]
    assert not _can_be_shorter(report, first, second) and _can_be_shorter(report, first, third)
    with_excerpt = replace(report, tests=(replace(report.tests[0], server_log=("x",)), *report.tests[1:]))
    assert _can_be_shorter(with_excerpt, first, second)


def test_empty_report_renders():
    report = build_report([], resolve_report_config({}, {}, {}))
    md = render_markdown(report)
    assert "No tests found" in md
    assert render_console(report).startswith("Test results: NO-TESTS — 0 tests: none")
    assert annotations_for(report) == ()
    assert report.timing == Timing()


def test_a_cut_inside_a_fence_or_details_closes_them_before_the_note() -> None:
    from db_test_action.publish.gha import fit_summary
    from db_test_action.report.textsafety import markdown_closers

    text = "<details>\n<summary>x</summary>\n\n````text\nline\n```\nstill inside\n"
    assert markdown_closers(text) == "\n````\n</details>"
    assert markdown_closers("```\na\n```\n<details>\n</details>\n") == ""
    body = "# title\n<details>\n\n````text\n" + "y\n" * 5000 + "````\n</details>\n"
    cut = fit_summary(body, 2000)
    note_at = cut.index("> **Note:**")
    assert cut[:note_at].rstrip().endswith("````\n</details>")


@given(st.text(alphabet=st.sampled_from("ab&<>\"'; #x27"), max_size=30), st.booleans())
def test_html_escaping_is_the_standard_librarys(text: str, quote: bool) -> None:
    assert escape_html(text, quote) == html.escape(text, quote)
