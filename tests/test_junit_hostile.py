"""Hostile JUnit: nesting depth, DTDs in any encoding, odd encodings, absurd numbers, and fuzzed corpus files.

Every input ends as rows plus at most one named `ParseProblem` (`<what>; <fix>`, one line) — never an
exception, never a hang. The fuzz tests start from the real files in tests/data/corpus and mutate them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db_test_action.config.report import resolve_report_config
from db_test_action.junit.files import parse_junit_file
from db_test_action.junit.parse import ParsedFile, parse_junit_bytes, parse_junit_chunks
from db_test_action.report.build import build_report
from db_test_action.report.codec import report_json

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"  # real files of other projects
CASE = b'<testcase classname="tests.test_a" name="t" time="0.5"/>'


def _check(parsed: ParsedFile) -> None:
    """What holds for any input: rows match the count, numbers are usable, a problem is one named line."""
    assert parsed.info.testcases == len(parsed.rows)
    for row in parsed.rows:
        assert 0.0 <= row.duration_s < float("inf")
        assert row.line is None or 0 <= row.line < 10**18
    problem = parsed.problem
    if problem is not None:
        message = problem.message
        assert message and "\n" not in message and not message.endswith("."), message
        assert message[0] == message[0].lower(), message
        assert "; " in message, message  # <what>; <fix>


# --- depth -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("open_tag", "close_tag"),
    [
        (b'<testsuite name="s"><properties><property name="shard" value="2"/></properties>', b"</testsuite>"),
        (b"<testsuites>", b"</testsuites>"),
    ],
)
def test_twenty_thousand_nested_suites_are_read_in_linear_time(open_tag, close_tag):
    depth = 20_000
    data = b"<testsuites>" + open_tag * depth + CASE + close_tag * depth + b"</testsuites>"
    started = time.perf_counter()
    parsed = parse_junit_bytes(data, "deep.xml")
    elapsed = time.perf_counter() - started
    # The quadratic reader this replaced took 163 s here; linear takes well under a second.
    assert elapsed < 20, f"{elapsed:.1f}s for {depth} nested suites"
    assert parsed.problem is None and len(parsed.rows) == 1
    _check(parsed)


def test_deep_nesting_inside_a_testcase_is_skipped_in_linear_time():
    depth = 50_000
    data = (
        b'<testsuite><testcase classname="tests.test_a" name="t"><failure message="m">'
        + b"<x>" * depth + b"</x>" * depth
        + b'</failure></testcase><testcase classname="tests.test_a" name="u"/></testsuite>'
    )  # fmt: skip
    started = time.perf_counter()
    parsed = parse_junit_bytes(data, "deep.xml")
    assert time.perf_counter() - started < 20
    assert [r.outcome.value for r in parsed.rows] == ["failed", "passed"]


# --- DTDs and encodings ------------------------------------------------------------------------------------

BOMB = b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'


@pytest.mark.parametrize(
    "data",
    [
        BOMB + b"<testsuite>" + CASE + b"</testsuite>",
        b'<?xml version="1.0"?>\n<!-- a comment -->\n<?pi x?>' + BOMB + b"<testsuite/>",
        b'<!DOCTYPE testsuite SYSTEM "file:///etc/passwd"><testsuite/>',
        b"\xef\xbb\xbf" + BOMB + b"<testsuite/>",  # UTF-8 BOM
        ('<?xml version="1.0" encoding="utf-16"?>' + BOMB.decode() + "<testsuite/>").encode("utf-16"),
        ('<?xml version="1.0" encoding="utf-16"?>' + BOMB.decode() + "<testsuite/>").encode("utf-16-le"),
        ('<?xml version="1.0" encoding="utf-16"?>' + BOMB.decode() + "<testsuite/>").encode("utf-16-be"),
    ],
)
def test_a_dtd_before_the_root_is_refused_in_any_encoding(data):
    parsed = parse_junit_bytes(data, "dtd.xml")
    assert parsed.rows == ()
    assert parsed.problem is not None
    assert parsed.problem.message.startswith("refused: the file declares a DTD or entities (<!")
    _check(parsed)


@pytest.mark.parametrize("cut", range(1, len(BOMB) + 40, 3))
def test_a_dtd_split_across_read_chunks_is_still_refused(cut):
    data = b'<?xml version="1.0"?>\n<!-- c -->' + BOMB + b"<testsuite>" + CASE + b"</testsuite>"
    parsed = parse_junit_chunks([data[:cut], data[cut : cut + 5], data[cut + 5 :]], "dtd.xml")
    assert parsed.rows == () and parsed.problem is not None
    assert parsed.problem.message.startswith("refused: the file declares a DTD")


CUT_SHORT = b"<testsuite>" + CASE + b"\n<testcase name='b'><failure><![CDATA[line 1\nline 2\nline"
BROKEN_MID_FILE = b"<testsuite>" + CASE + b"<!-- x\n" + b"line\n" * 50 + b"</testsuite>\n"  # unclosed comment


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 16])
def test_cut_short_or_broken_mid_file_whatever_the_read_chunks(size):
    """A file that ends inside a token is truncated; one whose comment runs from mid-file to the end is
    broken (expat names the comment's first line): the same verdict however the file arrives (the
    parser counts only the lines after the error, from the bytes it keeps behind)."""
    for data, verdict in ((CUT_SHORT, "truncated XML"), (BROKEN_MID_FILE, "not well-formed XML")):
        parsed = parse_junit_chunks([data[at : at + size] for at in range(0, len(data), size)], "x.xml")
        assert parsed.problem is not None and parsed.problem.message.startswith(verdict), (size, parsed)
        assert len(parsed.rows) == 1


@pytest.mark.parametrize(
    ("tail", "verdict"),
    [(b"", "truncated XML"), (b"\n" * 5, "not well-formed XML")],
    ids=["one-line", "lines-after"],
)
def test_a_token_begun_before_the_kept_megabyte_is_judged_by_the_whole_file(tmp_path, tail, verdict):
    """A 2 MB attribute value cut short (pytest writes a message's newlines as &#10;: one line) is a
    truncated file; the same value with lines after it is broken mid-file. The parser keeps only the
    last megabyte, so it reads the file (or the bytes) once more to count the lines after the error."""
    data = b"<testsuite>" + CASE + b"<testcase name='b'><failure message='" + b"x" * (1 << 21) + tail
    path = tmp_path / "big.xml"
    path.write_bytes(data)
    for parsed in (parse_junit_bytes(data, "big.xml"), parse_junit_file(path, "big.xml")):
        assert parsed.problem is not None and parsed.problem.message.startswith(verdict), parsed.problem
        assert len(parsed.rows) == 1


def test_a_megabyte_of_prolog_is_a_named_problem_not_a_scan_of_the_whole_file():
    chunks = [b"<!-- " + b"x" * (1 << 16)] * 40 + [b" -->" + BOMB + b"<testsuite/>"]
    parsed = parse_junit_chunks(chunks, "pad.xml")
    assert parsed.problem is not None
    assert parsed.problem.message.startswith("more than 1 MB before the root element; ")


def test_a_doctype_inside_the_document_or_an_undeclared_entity_is_a_syntax_problem():
    for data in (b"<testsuite>" + CASE + b"<!DOCTYPE x></testsuite>", b'<testsuite name="&lol;"/>'):
        parsed = parse_junit_bytes(data, "x.xml")
        assert parsed.problem is not None and "not well-formed XML" in parsed.problem.message
        _check(parsed)


@pytest.mark.parametrize("codec", ["utf-8", "utf-16", "iso-8859-1", "windows-1252", "us-ascii"])
def test_encodings_expat_reads_are_read(codec):
    name = "caf\xe9" if codec != "us-ascii" else "cafe"
    text = f'<?xml version="1.0" encoding="{codec}"?><testsuite><testcase classname="tests.test_a" name="{name}"/></testsuite>'
    parsed = parse_junit_bytes(text.encode(codec), "enc.xml")
    assert parsed.problem is None
    assert parsed.rows[0].test_id == f"tests/test_a.py::{name}"


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (b'<?xml version="1.0" encoding="utf-32"?><testsuite/>', "utf-32"),
        (b'<?xml version="1.0" encoding="shift_jis"?><testsuite/>', "shift_jis"),
        (b'<?xml version="1.0" encoding="no-such-codec"?><testsuite/>', "no-such-codec"),
        (b'<?xml version="1.0" encoding="rot13"?><testsuite/>', "rot13"),
        (b'<?xml version="1.0" encoding="cp500"?><testsuite/>', "cp500"),
        (b'<?xml version="1.0" encoding="utf-16"?><testsuite/>', "utf-16"),  # declared, but it is not
    ],
)
def test_unusual_declared_encodings_are_a_named_problem(data, declared):
    parsed = parse_junit_bytes(data, "enc.xml")
    assert parsed.problem is not None
    assert parsed.problem.message.startswith(f"unsupported encoding {declared!r} (")
    assert parsed.problem.message.endswith("; write JUnit as UTF-8")
    _check(parsed)


def test_utf32_with_a_bom_is_a_named_problem():
    parsed = parse_junit_bytes("<testsuite/>".encode("utf-32"), "enc.xml")
    assert parsed.problem is not None and parsed.problem.message.startswith("not well-formed XML")


# --- numbers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ('time="1e400"', "time='1e400' is not a number of seconds from 0 to 1e7 (read as 0)"),
        ('time="1e308"', "time='1e308' is not a number of seconds"),  # two of them sum to infinity
        ('time="20000000"', "time='20000000' is not a number of seconds"),
        ('time="nan"', "time='nan' is not a number of seconds"),
        ('time="-inf"', "time='-inf' is not a number of seconds"),
        ('time="-3"', "time='-3' is not a number of seconds"),
        ('time="ten"', "time='ten' is not a number of seconds"),
        (f'line="{"9" * 5000}"', "line='99999999999999999999…' is not a line number (ignored)"),
        ('line="²"', "line='²' is not a line number (ignored)"),
        ('line="١٢"', "line='١٢' is not a line number (ignored)"),
    ],
)
def test_absurd_testcase_numbers_are_named_and_the_testcase_kept(case, expected):
    data = f'<testsuite><testcase classname="tests.test_a" name="t" {case}/></testsuite>'.encode()
    parsed = parse_junit_bytes(data, "n.xml")
    assert len(parsed.rows) == 1 and parsed.rows[0].duration_s == 0.0 and parsed.rows[0].line is None
    assert parsed.problem is not None and expected in parsed.problem.message
    assert parsed.problem.message.startswith("testcase ")
    _check(parsed)


@pytest.mark.parametrize("value", ["9" * 5000, "²", "99999999999999999999"])
def test_absurd_shard_and_run_properties_are_named_not_a_crash(value):
    data = (
        f'<testsuite><properties><property name="shard" value="{value}"/></properties>'
        f'<testcase classname="tests.test_a" name="t"><properties><property name="run" value="{value}"/>'
        "</properties></testcase></testsuite>"
    ).encode()
    parsed = parse_junit_bytes(data, "shard-3-run-1.xml")
    assert parsed.info.shard == 3  # the file name's, not the absurd property
    assert parsed.rows[0].run == 1
    assert parsed.problem is not None and parsed.problem.message.startswith("property ")
    _check(parsed)


def test_a_suite_with_an_infinite_time_is_named():
    parsed = parse_junit_bytes(b'<testsuite name="s" time="inf">' + CASE + b"</testsuite>", "t.xml")
    assert parsed.info.wall_s == 0.0
    assert parsed.problem is not None and parsed.problem.message.startswith("suite s: time='inf'")


# --- fuzzing, from the real corpus ----------------------------------------------------------------------


def _corpus() -> list[bytes]:
    files = sorted(p for p in CORPUS_DIR.rglob("*.xml") if "__outputs__" not in p.parts)
    return [p.read_bytes() for p in files if p.stat().st_size < 200_000]


CORPUS = _corpus()
HOSTILE = [
    BOMB,
    b"<!DOCTYPE x>",
    b"<!ENTITY a 'b'>",
    b"&lol;",
    b"&#0;",
    b"&#x1F600;",
    b"<![CDATA[",
    b"]]>",
    b'<testcase classname="tests.test_z" name="z" time="1e400" line="99999999999999999999999"/>',
    b'<property name="shard" value="\xc2\xb2"/>',
    b'<property name="attempt" value="99999999999999999999999999"/>',
    b'<?xml version="1.0" encoding="utf-32"?>',
    b"<testsuite>" * 50,
    b"</testsuite>",
    b"\xff\xfe",
    b"\x00",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b'time="nan"',
    b'time="-0"',
    b'message="failed on setup with &quot;x&quot;"',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "truncate", "replace", "duplicate", "attr"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(HOSTILE) | st.binary(max_size=12))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 400))]
        else:  # an attribute value swapped for a hostile number
            match = re.search(rb'(time|line)="[^"]*"', bytes(data[at:]))
            if match:
                value = draw(st.sampled_from([b"1e400", b"nan", b"-1", b"9" * 30, b"\xc2\xb2", b""]))
                start, end = at + match.start(), at + match.end()
                data[start:end] = match.group(1) + b'="' + value + b'"'
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_corpus_files_parse_to_rows_and_named_problems(data):
    parsed = parse_junit_bytes(data, "fuzz.xml")
    _check(parsed)
    config = resolve_report_config({}, {}, {}, "fuzz")
    report = build_report([parsed], config)
    orjson.loads(report_json(report))  # the JSON is valid and holds no NaN/Infinity


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CORPUS), st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"]))
def test_corpus_files_reencoded_read_the_same(data, codec):
    """A file re-encoded (its declaration dropped) reads the same testcases, or names its problem."""
    plain = parse_junit_bytes(data, "f.xml")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    text = re.sub(r"^\ufeff?<\?xml[^>]*\?>", "", text)
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(codec, "")
    again = parse_junit_bytes((bom + text).encode(codec), "f.xml")
    _check(again)
    if plain.problem is None and again.problem is None:
        assert [r.test_id for r in again.rows] == [r.test_id for r in plain.rows]
