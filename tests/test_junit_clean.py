"""Clean testcases taken at C speed (junit/clean_runs.py) read exactly as expat's reader reads them.

Each file is parsed twice: with `again` (runs of clean testcases bypass expat) and without it (every
element through expat's callbacks, the reader alone), in the same pieces, and the two must agree on
every row, the file's facts and its problem. Real files (tests/data), hostile placements of clean
testcases (in a comment, an attribute value, after the root, under a half-written reference) and
hypothesis-made documents are compared; a spy on expat's start handler shows the fast path was taken.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db_test_action.junit import clean_runs
from db_test_action.junit import reader as reader_module
from db_test_action.junit.clean_runs import MAX_CARRY, clean_pattern, is_utf8
from db_test_action.junit.parse import ParsedFile, parse_junit_bytes, parse_junit_chunks

DATA = Path(__file__).resolve().parent / "data"
NAME = "shard-2-run-1.xml"
CLEAN = b'<testcase classname="tests.test_a.TestA" name="test_%d[x-1]" file="tests/test_a.py" line="%d" time="0.%03d" />'
HEAD = b'<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest">'
TAIL = b"</testsuite></testsuites>\n"


def clean(i: int) -> bytes:
    return CLEAN % (i, i, i % 1000)


def both(data: bytes, size: int) -> tuple[ParsedFile, ParsedFile]:
    """(fast path, reader alone) over the same pieces of `data`."""

    def pieces() -> Iterator[bytes]:
        return (data[at : at + size] for at in range(0, len(data), size))

    return parse_junit_chunks(pieces(), NAME, pieces), parse_junit_chunks(pieces(), NAME)


def facts(parsed: ParsedFile) -> tuple:
    return parsed.info, [(type(r).__name__, tuple(r)) for r in parsed.rows], parsed.problem, parsed.is_merged


def assert_same(data: bytes, sizes: tuple[int, ...] = (7, 64, 1 << 16)) -> ParsedFile:
    for size in sizes:
        fast, alone = both(data, size)
        assert facts(fast) == facts(alone), size
    return fast


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tags expat's start handler saw (the fast path hands it only what lies between clean runs)."""
    seen: list[str] = []
    attach = reader_module.JUnitReader.attach

    def spy(self, parser) -> None:
        attach(self, parser)
        start = parser.StartElementHandler

        def counted(tag, attrs):
            seen.append(tag)
            return start(tag, attrs)

        parser.StartElementHandler = counted

    monkeypatch.setattr(reader_module.JUnitReader, "attach", spy)
    return seen


def test_clean_testcases_bypass_expat_and_read_as_the_reader_reads_them(starts: list[str]) -> None:
    failing = b'<testcase classname="tests.test_b" name="test_f" file="tests/test_b.py" line="3" time="1.5"><failure message="boom">E assert 1 == 2</failure></testcase>'
    data = HEAD + b"\n".join([*(clean(i) for i in range(3000)), failing, clean(3000)]) + TAIL
    parsed = parse_junit_bytes(data, NAME)
    assert parsed.problem is None and parsed.info.testcases == 3002 and parsed.info.is_pytest
    first = parsed.rows[0]
    assert (first.test_id, first.file, first.line, first.duration_s) == (
        "tests/test_a.py::TestA::test_0[x-1]", "tests/test_a.py", 1, 0.0,
    )  # fmt: skip
    assert (first.shard, first.run, first.source) == (2, 1, NAME)
    assert parsed.rows[3000].message == "boom" and parsed.rows[3001].test_id.endswith("test_3000[x-1]")
    assert starts.count("testcase") == 1  # only the failing one reached expat's callbacks
    del starts[:]
    assert facts(parse_junit_chunks(iter((data,)), NAME)) == facts(parsed)  # the reader alone agrees
    assert starts.count("testcase") == 3002


def test_real_files_read_the_same_both_ways(starts: list[str]) -> None:
    files = sorted((DATA / "corpus").rglob("*.xml")) + sorted((DATA / "junit").glob("*.xml"))
    assert len(files) > 10
    testcases = 0
    for path in files:
        testcases += assert_same(path.read_bytes(), sizes=(1 << 16,)).info.testcases
        assert_same(path.read_bytes(), sizes=(7, 300))
    del starts[:]
    for path in files:
        parse_junit_bytes(path.read_bytes(), path.name)
    assert starts.count("testcase") < testcases  # some were taken without expat's callbacks


HOSTILE = {
    # where a clean testcase's bytes are not a testcase, or taking them out would mend a broken file
    "in an attribute value": b'<foo bar="%s"/>',
    "between attributes": b"<foo %s bar='1'/>",
    "after a half-written reference": b"&amp%s;",
    "in a comment": b"<!-- %s -->",
    "in CDATA": b"<system-out><![CDATA[%s]]></system-out>",
    "in a processing instruction": b"<?pi %s?>",
    "in an unknown element": b"<foo>%s</foo>",
    "in a testcase": b'<testcase classname="a.b" name="c">%s</testcase>',
    "in a result's text": b"<testcase classname='a.b' name='c'><failure message='m'>t %s tail</failure></testcase>",
    "after the root": b"</testsuite></testsuites>%s<testsuites><testsuite>",
    "after inherited properties": b"<properties><property name='shard' value='4'/></properties>%s",
    "after a form feed": b"\x0c%s",
    "before a bad byte": b"%s\xff",
    "without a name": b'%s<testcase classname="" name="" time="1"/>%s',
    "between ]] and >": b"]]%s>",  # taken out, they would join into `]]>`, which text may not hold
}


@pytest.mark.parametrize("where", HOSTILE)
def test_clean_testcases_where_they_are_not_simply_tests(where: str) -> None:
    around = HOSTILE[where].replace(b"%s", clean(1) + b"\n" + clean(2))
    data = HEAD + clean(0) + around + clean(3) + TAIL
    fast = assert_same(data)
    fixed = assert_same(data.replace(around, b""))
    assert fixed.problem is None and fixed.info.testcases == 2
    if where in (
        "in an attribute value",
        "between attributes",
        "after a half-written reference",
        "after the root",
    ):
        assert fast.problem is not None and "not well-formed" in fast.problem.message
    if where == "after inherited properties":
        assert [r.shard for r in fast.rows] == [4, 4, 4, 4]  # the suite's shard is the file's


def test_a_file_cut_short_in_a_run_keeps_the_same_testcases_and_verdict() -> None:
    data = HEAD + b"".join(clean(i) for i in range(500)) + TAIL
    for cut in (len(HEAD) + 5, len(data) // 2, len(data) - 30, len(data) - 3):
        fast = assert_same(data[:cut], sizes=(64, 1 << 16))
        assert fast.problem is not None and "truncated" in fast.problem.message


def test_a_huge_text_without_markup_is_carried_in_bounded_pieces() -> None:
    big = b"x" * (MAX_CARRY + MAX_CARRY // 2)
    data = (
        HEAD
        + clean(0)
        + b'<testcase classname="a.b" name="t"><system-out>'
        + big
        + b"</system-out></testcase>"
        + clean(1)
        + TAIL
    )
    fast = assert_same(data, sizes=(1 << 16,))
    assert fast.info.testcases == 3 and fast.problem is None


def test_a_character_split_by_clean_testcases_stays_broken() -> None:
    """Taken out, the testcases would join the halves of a character into one the file does not hold."""
    for around in (b"\xc3%s\xa9", b"\xf0\x9f%s\x98%s\x80"):
        data = HEAD + around.replace(b"%s", clean(1)) + TAIL
        fast = assert_same(data, sizes=(1, 4, 1 << 16))
        assert fast.problem is not None and "not well-formed" in fast.problem.message


BIG = b"x" * (MAX_CARRY + 1000)


@pytest.mark.parametrize(
    "around",
    [
        b'<foo a="' + BIG + b'"><bar/>%s</foo>',  # the testcase is inside <foo>: not a test
        b'<properties junk="' + BIG + b'"><property name="worker" value="gw0"/></properties>%s',
        b'<testcase classname="a.b" name="' + BIG + b'" time="1"/>%s',  # a huge one, then clean ones
    ],
    ids=["in-an-element-after-a-huge-tag", "after-huge-properties", "after-a-huge-testcase"],
)
def test_a_tag_longer_than_a_megabyte_leaves_nothing_unread(around: bytes) -> None:
    """expat ≥ 2.6 defers a long token until twice as much has come, and pyexpat hands it data in 1 MB
    parts: the reader must not be asked about a run before it has read what came before."""
    data = HEAD + clean(0) + around.replace(b"%s", b"".join(clean(i) for i in range(1, 300))) + TAIL
    for size in (1 << 16, 1 << 18):
        fast, alone = both(data, size)
        assert facts(fast) == facts(alone), size


@pytest.mark.skipif(sys.version_info < (3, 11), reason="possessive repeats are Python 3.11's")
def test_the_pattern_for_python_3_10_matches_what_the_possessive_one_does() -> None:
    data = (
        HEAD
        + b"".join(clean(i) for i in range(50))
        + b"".join(HOSTILE.values()).replace(b"%s", clean(7))
        + TAIL
    )
    assert clean_pattern(False).split(data) == clean_pattern(True).split(data) == clean_runs.CLEAN.split(data)


@pytest.mark.parametrize(
    ("head", "utf8"),
    [
        (b"<testsuite>", True),
        (b'<?xml version="1.0"?><testsuite>', True),
        (b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?><a/>", True),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>', False),
        (b"\xff\xfe<\x00a\x00", False),
        (b'<?xml version="1.0" encoding="utf-8"', False),  # the declaration does not end
    ],
)
def test_only_utf8_files_take_the_fast_path(head: bytes, utf8: bool) -> None:
    assert is_utf8(head) is utf8


def test_a_latin1_file_reads_the_same() -> None:
    data = (
        HEAD.replace(b"utf-8", b"ISO-8859-1")
        + clean(0)
        + b'<testcase classname="a.b" name="caf\xe9" time="1"/>'
        + TAIL
    )
    fast = assert_same(data)
    assert fast.rows[1].test_id == "a.b::café"


# --- hypothesis: documents of clean testcases and everything that may sit among them ---------------------

_values = st.sampled_from(
    [b"", b"tests.test_a", b"tests.test_a.TestA", b"com.acme.FooTest", b"x y", b"t>x", b"t'x"]
)
_clean = st.builds(
    lambda cls, name, file, line, time, space: (
        b'<testcase classname="%s" name="%s"%s%s time="%s"%s/>' % (cls, name, file, line, time, space)
    ),
    _values,
    st.sampled_from([b"", b"test_1", b"test_2[a-b]", b"t>x"]),
    st.sampled_from([b"", b' file="tests/test_a.py"', b' file="/abs/x.py"', b' file="tests/test_b.py"']),
    st.sampled_from([b"", b' line="0"', b' line="17"', b' line="0009"', b' line=""']),
    st.sampled_from([b"0.001", b"12", b"9999999.5", b"0", b"1e3", b"-1"]),
    st.sampled_from([b" ", b""]),
)
_item = st.one_of(
    _clean,
    _clean,
    _clean,
    st.sampled_from(
        [
            b"\n", b"  ", b"\r\n", b"<!-- c -->", b"<?pi x?>", b"text &amp; more",
            b"<system-out><![CDATA[<testcase classname='a.b' name='c' time='1'/>]]></system-out>",
            b'<testcase classname="tests.test_c" name="e"><error message="x">t</error></testcase>',
            b"<properties><property name='run' value='3'/></properties>",
            b"<properties><property name='o' value='1'/></properties>",
            b'<testcase classname="" name="" time="1"/>',
            b'<foo a="1"><testcase classname="tests.test_d" name="n" time="1"/></foo>',
        ]
    ),
)  # fmt: skip
_suite = st.builds(
    lambda name, items: b"<testsuite%s>%s</testsuite>" % (name, b"".join(items)),
    st.sampled_from([b' name="pytest"', b" name='other'", b""]),
    st.lists(_item, max_size=25),
)
_document = st.one_of(
    st.builds(
        lambda suites: b'<testsuites name="pytest tests">%s</testsuites>' % b"".join(suites),
        st.lists(_suite, max_size=3),
    ),
    _suite,
).map(lambda root: b'<?xml version="1.0" encoding="utf-8"?>\n' + root + b"\n")
_damage = st.sampled_from(
    [
        b"<!-- c -->",
        b"&amp",
        b"\x0c",
        b"\xff",
        b'<foo a="',
        b'">',
        b"<",
        b'"',
        b"</testsuite>",
        b"<testsuite>",
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _document,
    st.one_of(st.none(), st.tuples(st.floats(0, 1), st.one_of(st.none(), _damage))),
    st.integers(1, 400),
)
def test_generated_documents_read_the_same_both_ways(data: bytes, damage: tuple | None, size: int) -> None:
    if damage is not None:  # cut short, or a byte sequence that breaks or shifts what follows
        at = int(damage[0] * len(data))
        data = data[:at] if damage[1] is None else data[:at] + damage[1] + data[at:]
    fast, alone = both(data, size)
    assert facts(fast) == facts(alone)
