"""JUnit ingestion against JUnit written by real pytest runs, hostile files, and the public corpus."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from pytest_runs import FLAKY_SUITE, PHASES_SUITE, run_pytest

from db_test_action.junit.files import expand_paths, parse_junit_file
from db_test_action.junit.parse import derive_test_id, group_tests, parse_junit_bytes
from db_test_action.model import Outcome, Phase, Status
from db_test_action.report.classify import classify_failure, default_category


def _tests(*parsed):
    occurrences = [o for p in parsed for o in p.occurrences]
    pytest_sources = frozenset(p.info.path for p in parsed if p.info.is_pytest)
    results = group_tests(
        occurrences, lambda o: default_category(o.file, o.test_id), classify_failure, pytest_sources
    )
    return {t.test_id: t for t in results}


@pytest.fixture(scope="module", params=["xunit1", "xunit2"])
def phases_junit(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    return run_pytest(folder, PHASES_SUITE, "-o", f"junit_family={request.param}")


def test_fixture_errors_get_their_phase_and_one_column_each(phases_junit):
    parsed = parse_junit_file(phases_junit)
    assert parsed.problem is None
    tests = _tests(parsed)
    base = "tests/test_phases.py::"
    assert tests[base + "test_passes"].status is Status.PASSED
    assert tests[base + "test_fails"].status is Status.FAILED
    setup = tests[base + "test_setup_error"]
    assert setup.status is Status.SETUP_ERROR
    assert setup.problems[0].phase is Phase.SETUP
    assert setup.problems[0].message.startswith("RuntimeError: setup exploded")  # pytest's wrapper removed
    assert setup.problems[0].cause.key == "connection"
    assert setup.problems[0].file == "conftest.py"  # where it was raised, not the test
    assert tests[base + "test_teardown_error"].status is Status.TEARDOWN_ERROR
    assert tests[base + "test_skipped"].status is Status.SKIPPED
    assert tests[base + "test_xfail"].status is Status.XFAILED
    assert tests[base + "test_xpass"].status is Status.PASSED
    assert tests[base + "TestGroup::test_param[2]"].status is Status.FAILED
    assert tests[base + "TestGroup::test_param[1]"].status is Status.PASSED
    assert len(tests) == 10


def test_teardown_error_after_failure_is_one_test_with_both_problems(phases_junit):
    parsed = parse_junit_file(phases_junit)
    same_name = [o for o in parsed.occurrences if o.test_id.endswith("::test_fails_and_teardown_error")]
    assert len(same_name) == 2  # pytest really writes two <testcase> elements
    test = _tests(parsed)["tests/test_phases.py::test_fails_and_teardown_error"]
    assert test.status is Status.FAILED
    assert test.executions == 1
    assert [(p.phase, p.outcome) for p in test.problems] == [
        (Phase.CALL, Outcome.FAILED),
        (Phase.TEARDOWN, Outcome.ERROR),
    ]
    assert test.problems[1].cause.key == "dependent-objects"


def test_reruns_make_flaky_tests_and_are_not_double_counted(tmp_path):
    junit = run_pytest(tmp_path, FLAKY_SUITE, "--reruns", "2")
    parsed = parse_junit_file(junit)
    tests = _tests(parsed)
    assert len(tests) == 3
    flaky = tests["tests/test_retry.py::test_flaky_once"]
    assert (flaky.status, flaky.executions, flaky.failed_executions) == (Status.FLAKY, 2, 1)
    always = tests["tests/test_retry.py::test_always_fails"]
    assert (always.status, always.executions, always.failed_executions) == (Status.FAILED, 3, 3)
    assert len(always.problems) == 1  # only the last attempt's failure is recorded by pytest
    assert tests["tests/test_retry.py::test_fine"].status is Status.PASSED


def test_reruns_under_xdist_with_setup_errors(tmp_path):
    junit = run_pytest(tmp_path, PHASES_SUITE, "-n", "2", "--reruns", "1", "-o", "junit_family=xunit1")
    tests = _tests(parse_junit_file(junit))
    assert len(tests) == 10
    setup = tests["tests/test_phases.py::test_setup_error"]
    assert (setup.status, setup.executions) == (Status.SETUP_ERROR, 2)
    both = tests["tests/test_phases.py::test_fails_and_teardown_error"]
    assert (both.status, both.executions, len(both.problems)) == (Status.FAILED, 2, 2)


def test_repeat_across_runs_that_fails_once_is_flaky(tmp_path):
    suite = {"tests/test_r.py": "import os\n\ndef test_r():\n    assert os.environ['RUN'] != '1'\n"}
    run1 = run_pytest(tmp_path / "a", suite, junit="shard-1-run-1.xml", env={"RUN": "1"})
    run2 = run_pytest(tmp_path / "b", suite, junit="shard-1-run-2.xml", env={"RUN": "2"})
    p1, p2 = parse_junit_file(run1, "shard-1-run-1.xml"), parse_junit_file(run2, "shard-1-run-2.xml")
    assert (p1.info.shard, p1.info.run, p2.info.run) == (1, 1, 2)
    test = _tests(p1, p2)["tests/test_r.py::test_r"]
    assert (test.status, test.executions, test.failed_executions) == (Status.FLAKY, 2, 1)


def test_runner_properties_are_read_from_testcases_and_suites(tmp_path):
    suite = {
        "conftest.py": """
            import pytest

            @pytest.fixture(autouse=True)
            def _props(record_property, record_testsuite_property):
                record_property("shard", "2")
                record_property("run", "1")
                record_property("attempt", "1")
                record_property("worker", "gw0")
        """,
        "test_p.py": "def test_p():\n    pass\n",
    }
    junit = run_pytest(tmp_path, suite)
    (occ,) = parse_junit_file(junit).occurrences
    assert (occ.shard, occ.run, occ.attempt, occ.worker) == (2, 1, 1, "gw0")


def test_suite_properties_give_shard_and_run(tmp_path):
    suite = {
        "conftest.py": """
            import pytest

            @pytest.fixture(scope="session", autouse=True)
            def _props(record_testsuite_property):
                record_testsuite_property("shard", "3")
                record_testsuite_property("run", "2")
        """,
        "test_p.py": "def test_p():\n    pass\n",
    }
    parsed = parse_junit_file(run_pytest(tmp_path, suite))
    assert (parsed.info.shard, parsed.info.run) == (3, 2)
    assert (parsed.occurrences[0].shard, parsed.occurrences[0].run) == (3, 2)
    assert parsed.occurrences[0].attempt is None and parsed.occurrences[0].worker is None


def test_truncated_file_is_a_named_problem_and_keeps_complete_testcases(phases_junit, tmp_path):
    data = phases_junit.read_bytes().replace(b"><", b">\n<")  # one element per line, like a long file
    cut = data[: data.index(b"test_xfail")]
    parsed = parse_junit_bytes(cut, "results/shard-3.xml")
    problem = parsed.problem
    assert problem is not None and problem.line == cut.count(b"\n") + 1
    assert "truncated XML (no closing </testsuites>)" in problem.message
    assert "re-run shard 3" in problem.message
    assert str(problem).startswith(f"results/shard-3.xml:{problem.line}: truncated")
    assert 5 <= len(parsed.occurrences) < 11


def test_entity_expansion_is_refused_with_a_named_error():
    lol = b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    lol += b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
        for i in range(1, 10)
    )
    lol += b']>\n<testsuite><testcase classname="a" name="&lol9;"/></testsuite>\n'
    parsed = parse_junit_bytes(lol, "bomb.xml")
    assert parsed.occurrences == ()
    assert parsed.problem is not None
    assert str(parsed.problem).startswith(
        "bomb.xml: refused: the file declares a DTD or entities (<!DOCTYPE)"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b"<suites><suite/></suites>", "not JUnit XML (root element <suites>"),
        (b"this is not xml", "not well-formed XML"),
        (b'<testsuite><testcase name="a" time="<<computed>>"/></testsuite>', "not well-formed XML"),
    ],
)
def test_broken_inputs_become_problems(data, expected):
    parsed = parse_junit_bytes(data, "x.xml")
    assert parsed.problem is not None and expected in parsed.problem.message


def test_missing_path_is_a_problem_and_directories_are_searched(tmp_path):
    (tmp_path / "r" / "deep").mkdir(parents=True)
    (tmp_path / "r" / "deep" / "a.xml").write_text("<testsuite/>")
    files, problems = expand_paths([str(tmp_path / "r"), str(tmp_path / "nope-*.xml")])
    assert [f.name for f in files] == ["a.xml"]
    assert len(problems) == 1 and "no JUnit XML files here" in problems[0].message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("tests.test_x", "test_a", None, None), ("tests/test_x.py::test_a", "tests/test_x.py")),
        (
            ("tests.test_x.TestC", "test_a[1]", None, None),
            ("tests/test_x.py::TestC::test_a[1]", "tests/test_x.py"),
        ),
        (
            ("tests.test_x.TestC", "test_a", "tests/test_x.py", "3"),
            ("tests/test_x.py::TestC::test_a", "tests/test_x.py"),
        ),
        (
            ("test_foo.TestFoo", "test_foo", "/home/runner/work/x/test_foo.py", "42"),
            ("test_foo.py::TestFoo::test_foo", "test_foo.py"),
        ),
        (("com.example.FooTest", "testBar", None, None), ("com.example.FooTest::testBar", None)),
        (("", "", None, None), ("<unnamed testcase #7>", None)),
    ],
)
def test_node_ids_are_derived_like_pytest(args, expected):
    test_id, file, _line = derive_test_id(*args, index=7)
    assert (test_id, file) == expected


# --- the public corpus (tests/data/corpus: real files of other projects, with their licences) -------------

CORPUS = Path(__file__).parent / "data" / "corpus"


def _corpus_xml() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*.xml") if "__outputs__" not in p.parts)


def test_every_corpus_file_parses_or_yields_a_named_problem():
    files = _corpus_xml()
    assert len(files) >= 15
    broken = {}
    for path in files:
        parsed = parse_junit_file(path, path.name)
        if parsed.problem:
            assert parsed.problem.file == path.name and parsed.problem.message
            broken[path.name] = parsed.problem.message
        else:
            assert parsed.info.testcases == len(parsed.occurrences)
    assert "truncated XML" in broken.pop("corrupt-xml.xml")
    assert broken.pop("empty.xml").startswith("empty file")
    assert broken.pop("non-junit.xml").startswith("not JUnit XML")
    assert broken.pop("NUnit-sec1752-file.xml").startswith("refused")  # XXE: never resolved
    assert broken.pop("expected.xml").startswith("not well-formed XML")  # time="<<computed>>"
    assert not broken  # every other dialect parses


def _expected_counts() -> dict[str, dict[str, int]]:
    rows = {}
    with open(CORPUS / "ENRICOMI_EXPECTED.tsv", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)  # input (relative to enricomi/), conclusion, title_or_parse_error, stats, note
        for rel, _conclusion, _title, stats, *_note in reader:
            if rel.endswith(".xml") and stats.startswith("tests="):
                first = stats.split("|")[0].split()
                rows[rel] = {k: int(v) for k, v in (item.split("=") for item in first)}
    return rows


def test_pytest_corpus_counts_match_enricomi_expectations():
    checked = 0
    for rel, want in _expected_counts().items():
        if (
            "/pytest/" not in rel
            and "junit-xml/junit.multiresult" not in rel
            and "minimal-attributes" not in rel
        ):
            continue
        parsed = parse_junit_file(CORPUS / "enricomi" / rel)
        assert parsed.problem is None, rel
        tests = _tests(parsed).values()
        got = {
            "tests": len(tests),
            "succ": sum(t.status is Status.PASSED for t in tests),
            "skip": sum(t.status in (Status.SKIPPED, Status.XFAILED) for t in tests),
            "fail": sum(t.status is Status.FAILED for t in tests),
        }
        assert got == {k: want[k] for k in got} | (
            {"fail": want["fail"] + want["err"]} if want["err"] else {}
        ), rel  # a JUnit <error> outside pytest's setup/teardown is a failure of the test body
        checked += 1
    assert checked == 7


def test_corpus_files_are_the_upstream_bytes():
    """MANIFEST.tsv pins every copied file (licences included) to the upstream blob's sha256."""
    rows = list(
        csv.reader((CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines(), delimiter="\t")
    )
    listed = {row[0]: row[2] for row in rows[1:]}
    on_disk = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name not in ("MANIFEST.tsv", "ENRICOMI_EXPECTED.tsv", "README.md")
    }
    assert set(listed) == on_disk
    for rel, sha in listed.items():
        assert hashlib.sha256((CORPUS / rel).read_bytes()).hexdigest() == sha, rel
    assert {"enricomi/LICENSE", "mikepenz/LICENSE"} <= on_disk


def test_surefire_flaky_failures_and_repeated_cases_make_flaky_tests():
    base = CORPUS / "mikepenz" / "test_results"
    tests = _tests(parse_junit_file(base / "flaky_retries" / "flaky_with_classname_file.xml"))
    assert len(tests) == 3
    assert tests["test_foo.py::TestFoo::test_foo"].status is Status.FLAKY
    assert tests["test_bar.py::TestBar::test_foo"].status is Status.PASSED
    always = _tests(parse_junit_file(base / "flaky_retries" / "flaky_all_failures.xml"))
    (only,) = always.values()
    assert (only.status, only.executions) == (Status.FAILED, 3)
    surefire = _tests(parse_junit_file(base / "maven_surefire_flaky" / "surefire-report.xml"))
    assert any(t.status is Status.FLAKY for t in surefire.values())
